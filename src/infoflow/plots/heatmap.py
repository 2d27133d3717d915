"""Heatmaps of one prompt: knocking out ``last ← token i`` in each window, the change ``p − p0`` of the
target's probability, tokens × window starts (research/reference-spec.md §9.2), one panel per model."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from infoflow.plots.aggregate import depth_of, last_window_start
from infoflow.plots.facts import subject_positions
from infoflow.plots.style import DIVERGING_CMAP, join_wrapped, plain_text, styled

XAxis = Literal["depth", "window"]
CMAP = DIVERGING_CMAP  # red: the knockout lowers the target's probability; white: no change
DEPTH_TICKS = np.arange(0, 101, 20)
ROW_HEIGHT = 0.2  # inches per token row
MARGINS = 1.7  # inches for titles and the x axis
MAX_COLORBAR = 3.5  # inches


def heatmap_matrix(rows: pd.DataFrame) -> tuple[np.ndarray, list[str], float]:
    """For the rows of one prompt, model and window size: ``p − p0`` as [tokens, window starts 0..last]
    (NaN where a window is missing), the row labels (the last token marked ``*``) and ``p0``."""
    p0 = rows["p0"].dropna().unique()
    if len(p0) != 1:
        raise ValueError(f"heatmap rows need one p0 per prompt and model, got {list(p0)}")
    columns = range(last_window_start(rows) + 1)
    p = rows.pivot(index="position", columns="window_start", values="p").reindex(columns=columns)
    tokens = rows.groupby("position")["token"].first() if "token" in rows.columns else pd.Series(dtype=str)
    labels = [plain_text(str(tokens.get(i))) if pd.notna(tokens.get(i)) else f"[{i}]" for i in p.index]
    labels[-1] += "*"
    # plotted value: absolute change p - p0 (not relative), as the reference
    return p.to_numpy(dtype=float) - float(p0[0]), labels, float(p0[0])


def heatmap_marks(rows: pd.DataFrame, n_tokens: int) -> tuple[list[int], str | None]:
    """The subject's rows and the target of one prompt's heatmap rows (``fact_subject``/``fact_target`` columns
    of ``runs_frame``); none and None where they are unknown."""
    if "fact_subject" not in rows.columns or rows["fact_subject"].isna().all():
        return [], None
    first = rows.dropna(subset=["fact_subject"]).iloc[0]
    tokens = rows.groupby("position")["token"].first().reindex(range(n_tokens)).fillna("").astype(str).tolist()
    return subject_positions(tokens, str(first["fact_prompt"]), str(first["fact_subject"])), str(first["fact_target"])


def _mark_subject(ax, positions: list[int], n_columns: int) -> None:
    """Subject rows: bold labels and a box around them."""
    for i in positions:
        ax.get_yticklabels()[i].set_fontweight("bold")
    if positions:
        top, bottom = min(positions) - 0.5, max(positions) + 0.5
        ax.add_patch(Rectangle((-0.5, top), n_columns, bottom - top, fill=False, linewidth=1.2, edgecolor="black"))


def _depth_ticks(last: int) -> tuple[np.ndarray, list[str]]:
    """Column positions and labels of depth ticks: 0, 20, ..., 100 %, or every column when there are few."""
    if last < len(DEPTH_TICKS):
        columns = np.arange(last + 1)
        return columns, [f"{d:.0f}" for d in depth_of(columns, last)]
    return DEPTH_TICKS / 100 * last, [f"{t:d}" for t in DEPTH_TICKS]


def _extend(values: np.ndarray, limit: float) -> Literal["neither", "both", "min", "max"]:
    low, high = bool(np.nanmin(values) < -limit), bool(np.nanmax(values) > limit)
    return {(False, False): "neither", (True, True): "both", (True, False): "min", (False, True): "max"}[(low, high)]


@styled
def heatmap_figure(
    frame: pd.DataFrame,
    prompt_id: int,
    *,
    window_size: int | None = None,
    limit: float | None = 0.3,
    x: XAxis = "depth",
    title: str | None = None,
) -> Figure:
    """Tokens × windows heatmap of ``p − p0`` for one prompt; one panel per ``model`` in the rows.

    ``frame``: heatmap rows (``store.frame`` of one run, or ``runs_frame`` of several, which adds
    ``model`` and ``n_layers``). The colour scale spans ``±limit`` (reference: 0.3; None: the largest
    change). ``x`` labels windows by depth percent (100 % = last window start) or by first layer.
    """
    if x not in ("depth", "window"):
        raise ValueError(f"x must be 'depth' or 'window', not {x!r}")
    rows = frame[frame["prompt_id"] == prompt_id]
    if window_size is not None:
        rows = rows[rows["window_size"] == window_size]
    sizes = rows["window_size"].unique()
    if len(sizes) != 1:
        found = "no rows" if rows.empty else f"window sizes {sorted(sizes)}"
        raise ValueError(f"prompt {prompt_id}: {found}; choose one window size that was computed")
    models = list(dict.fromkeys(rows["model"])) if "model" in rows.columns else [None]
    parts = [rows if m is None else rows[rows["model"] == m] for m in models]
    panels = [heatmap_matrix(part) for part in parts]
    marks = [heatmap_marks(part, len(labels)) for part, (_, labels, _) in zip(parts, panels, strict=True)]
    scale = limit if limit is not None else max(float(np.nanmax(np.abs(v))) for v, _, _ in panels) or 1e-9

    n_tokens = max(len(labels) for _, labels, _ in panels)
    label_width = 0.07 * max(len(label) for _, labels, _ in panels for label in labels)  # inches at 9 pt
    panel_width = max(2.4, 0.08 * max(v.shape[1] for v, _, _ in panels)) + label_width
    fig = Figure(figsize=(panel_width * len(panels) + 0.9, ROW_HEIGHT * n_tokens + MARGINS), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, model, (values, labels, p0), (subject, _) in zip(axes, models, panels, marks, strict=True):
        image = ax.imshow(values, cmap=CMAP, vmin=-scale, vmax=scale, aspect="auto", interpolation="nearest")
        ax.grid(False)
        ax.spines[:].set_visible(False)
        ax.set_yticks(range(len(labels)), labels)
        _mark_subject(ax, subject, values.shape[1])
        ax.tick_params(axis="y", length=0)
        if x == "depth":
            ax.set_xticks(*_depth_ticks(values.shape[1] - 1))
            ax.set_xlabel("Depth (%)")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("First layer of window")
        ax.set_title("\n".join([*([plain_text(str(model))] if model is not None else []), f"p0 = {p0:.3f}"]))
    extend = _extend(np.concatenate([v.ravel() for v, _, _ in panels]), scale)
    shrink = min(1.0, MAX_COLORBAR / (ROW_HEIGHT * n_tokens))
    fig.colorbar(image, ax=axes, label="p − p0", extend=extend, shrink=shrink, aspect=25)
    if title is None:
        last_token = panels[0][1][-1].removesuffix("*")
        target = marks[0][1]
        parts = [
            f"Knockout of each token → last token '{last_token}'",
            *([f"target {target!r}"] if target is not None else []),
            f"prompt {prompt_id}",
            f"window size {sizes[0]}",
            *(["subject boxed"] if marks[0][0] else []),
        ]
        title = "\n".join(plain_text(line) for line in join_wrapped(parts, width=int(fig.get_figwidth() * 12)))
    fig.suptitle(title)
    return fig
