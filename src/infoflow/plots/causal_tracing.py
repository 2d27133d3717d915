"""Causal-tracing grids in the style of ROME (Meng et al. 2022, Fig. 1): the target's probability with one
site's clean value restored at each (position, layer) of a run whose subject was noised; a panel per site
(residual stream purple, mixer red, MLP green). For one prompt the rows are its tokens (subject tokens marked
``*``); averaged over prompts, the rows are the parts of the prompt (``ROLES``), as ROME's average figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from infoflow.experiments.prompt_parts import ROLES, SUBJECT_ROLES
from infoflow.plots.style import join_wrapped, plain_text, styled

SITE_CMAPS = {"residual": "Purples", "mixer": "Reds", "mlp": "Greens"}
SITE_TITLES = {"residual": "residual stream", "mixer": "mixer update", "mlp": "MLP update"}
ROLE_LABELS = {
    "before": "tokens before the subject",
    "subject_first": "first subject token",
    "subject_middle": "middle subject tokens",
    "subject_last": "last subject token*",
    "first_after": "first subsequent token",
    "further": "further tokens",
    "last": "last token",
}


def tracing_grid(rows: pd.DataFrame, prompt_id: int | None, value: str = "p") -> tuple[np.ndarray, list[str]]:
    """[rows, layers] of ``value`` for one site's rows: per token of ``prompt_id``, or (None) the mean over
    prompts per part of the prompt; and the row labels."""
    layers = range(int(rows["layer"].max()) + 1)
    if prompt_id is not None:
        rows = rows[rows["prompt_id"] == prompt_id]
        grid = rows.pivot(index="position", columns="layer", values=value).reindex(columns=layers)
        tokens = rows.groupby("position")[["token", "role"]].first()
        labels = [
            plain_text(str(t)) + ("*" if r in SUBJECT_ROLES else "")
            for t, r in zip(tokens.token, tokens.role, strict=True)
        ]
        return grid.to_numpy(dtype=float), labels
    means = rows.groupby(["role", "layer"])[value].mean().unstack("layer").reindex(columns=layers)
    present = [r for r in ROLES if r in means.index]
    return means.loc[present].to_numpy(dtype=float), [ROLE_LABELS[r] for r in present]


@styled
def causal_tracing_figure(
    frame: pd.DataFrame, prompt_id: int | None = None, *, value: str = "p", title: str | None = None
) -> Figure:
    """A panel per site of the recovered ``value`` (``p``, or ``effect`` = p - p_corrupted) over positions x
    layers, for ``prompt_id`` or averaged over the prompts (None); rows of one run (``store.frame``)."""
    if frame.empty:
        raise ValueError("no causal-tracing rows to plot")
    if frame["window_size"].nunique() > 1:
        raise ValueError("the rows hold several window sizes; select one")
    if prompt_id is not None and prompt_id not in set(frame["prompt_id"]):
        raise ValueError(f"no causal-tracing rows for prompt {prompt_id}")
    sites = [s for s in SITE_CMAPS if s in set(frame["site"])]
    grids = [tracing_grid(frame[frame["site"] == site], prompt_id, value) for site in sites]
    n_rows = max(len(labels) for _, labels in grids)
    label_width = 0.07 * max(len(label) for _, labels in grids for label in labels)
    width = max(len(sites) * (2.6 + label_width), 6.0)  # room for a two-line title over one panel
    fig = Figure(figsize=(width, 0.25 * n_rows + 1.9), layout="constrained")
    axes = fig.subplots(1, len(sites), squeeze=False)[0]
    for ax, site, (grid, labels) in zip(axes, sites, grids, strict=True):
        image = ax.imshow(grid, cmap=SITE_CMAPS[site], aspect="auto", interpolation="nearest")
        ax.grid(False)
        ax.spines[:].set_visible(False)
        ax.set_yticks(range(len(labels)), labels)
        ax.tick_params(axis="y", length=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Layer (window centre)")
        ax.set_title(f"Restoring the {SITE_TITLES[site]}")
        fig.colorbar(image, ax=ax, label="p(target)" if value == "p" else "p − p(corrupted)", shrink=0.8)
    if title is None:
        which = f"prompt {prompt_id}" if prompt_id is not None else f"mean over {frame['prompt_id'].nunique()} prompts"
        corrupted, clean = frame["p_corrupted"].mean(), frame["p0"].mean()
        parts = ["Causal tracing", which, f"p clean {clean:.3f}, corrupted {corrupted:.3f}"]
        if int(frame["window_size"].iloc[0]) > 1:
            parts.append(f"window {int(frame['window_size'].iloc[0])}")
        title = "\n".join(join_wrapped(parts, width=int(fig.get_figwidth() * 12)))
    fig.suptitle(title)
    return fig
