"""Sublayer-knockout curves (Geva et al. 2023, Fig. 5 style): the change of the target's probability when the
mixer's or the MLP's update at the target is zeroed in a window of layers, one line per site, with 95 %
bands of the mean over prompts (percentile bootstrap: ``infoflow.plots.aggregate``)."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MultipleLocator

from infoflow.plots.aggregate import Metric, aggregate_by_depth
from infoflow.plots.style import join_wrapped, plain_text, styled

SITE_COLORS = {"mixer": "#a41908", "mlp": "#0f710f"}  # ROME's colours: attention red, MLP green
SITE_LABELS = {"mixer": "mixer (attention / SSM) update", "mlp": "MLP update"}
Y_LABELS = {"diff": "Change in p(target) (%)", "hit": "Target still top-1 (%)"}


@styled
def sublayer_knockout_figure(
    frame: pd.DataFrame, *, metric: Metric = "diff", confidence: float = 0.95, title: str | None = None
) -> Figure:
    """Mean ``metric`` per window depth, a line per site, a panel per model (rows of one target and window
    size: ``store.frame`` of one run, or ``runs_frame`` of several)."""
    if frame.empty:
        raise ValueError("no sublayer-knockout rows to plot")
    for column in ("target", "window_size"):
        if frame[column].nunique() > 1:
            raise ValueError(f"the rows hold several {column} values; select one")
    models = list(dict.fromkeys(frame["model"])) if "model" in frame.columns else [None]
    fig = Figure(figsize=(max(3.2 * len(models), 5.5) + 0.4, 3.4), layout="constrained")
    axes = fig.subplots(1, len(models), sharey=True, squeeze=False)[0]
    for ax, model in zip(axes, models, strict=True):
        rows = frame if model is None else frame[frame["model"] == model]
        points = aggregate_by_depth(rows, ["site"], metric, confidence)
        ax.axhline(0.0 if metric == "diff" else 100.0, color="0.4", linewidth=0.8, linestyle="--", zorder=1)
        for site, line in points.groupby("site", sort=False):
            color = SITE_COLORS.get(str(site), "0.3")
            label = f"{SITE_LABELS.get(str(site), site)} (n = {int(line['n'].min())})"
            ax.fill_between(line["depth"], line["low"], line["high"], color=color, alpha=0.2, linewidth=0)
            ax.plot(line["depth"], line["mean"], color=color, label=label, zorder=3)
        ax.set_xlim(0, 100)
        ax.xaxis.set_major_locator(MultipleLocator(20))
        ax.set_xlabel("Layer depth (%)")
        if model is not None:
            ax.set_title(plain_text(str(model)))
    axes[0].set_ylabel(Y_LABELS[metric])
    legend = {}  # label -> handle, over every panel (a Mamba panel has no MLP line)
    for ax in axes:
        legend |= {label: handle for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncol=2)
    if title is None:
        parts = [
            f"Sublayer knockout at the {frame['target'].iloc[0]} token",
            f"window size {frame['window_size'].iloc[0]}",
        ]
        title = "\n".join(join_wrapped(parts, width=int(fig.get_figwidth() * 12)))
    fig.suptitle(title)
    return fig
