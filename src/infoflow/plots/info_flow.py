"""Info-flow curves: one panel per source, one line per model / feature category / window size, with
95 % bands of the mean over prompts (percentile bootstrap: ``infoflow.plots.aggregate``)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Hashable, Sequence
from typing import Literal

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, MultipleLocator

from infoflow.plots.aggregate import Metric, aggregate, aggregate_by_depth
from infoflow.plots.style import (
    join_wrapped,
    line_colors,
    line_label,
    ordered_lines,
    ordered_sources,
    plain_text,
    styled,
)

XAxis = Literal["depth", "window"]
# Columns that must hold one value unless they are the lines.
FIXED = ("model", "target", "feature_category", "window_size", "mixers")
Y_LABELS = {"diff": "Change in p(target) (%)", "hit": "Target still top-1 (%)"}
X_LABELS = {"depth": "Layer depth (%)", "window": "First layer of window"}
PANEL_COLUMNS = 4
CHAR_WIDTH = 5.2  # points per character of legend text at 9 pt (DejaVu Sans, on average)


def _single_values(frame: pd.DataFrame, lines: str) -> dict[str, Hashable]:
    """The value of every fixed column; refuse rows that mix several values of one."""
    values = {}
    for column in FIXED:
        if column == lines or column not in frame.columns:
            continue
        unique = list(dict.fromkeys(frame[column]))
        if len(unique) > 1:
            raise ValueError(
                f"the rows hold several {column} values {unique}: select one, or draw them as lines (lines={column!r})"
            )
        values[column] = unique[0]
    return values


def _title(fixed: dict[str, Hashable], frame: pd.DataFrame, width: int) -> str:
    """'Knockout of edges to the last token · model · window size 9 · features', then the prompts."""
    parts = [f"Knockout of edges to the {fixed['target']} token" if "target" in fixed else "Knockout"]
    if "model" in fixed:
        parts.append(str(fixed["model"]))
    if "window_size" in fixed:
        parts.append(f"window size {fixed['window_size']}")
    if fixed.get("feature_category", "all") != "all":
        parts.append(line_label("feature_category", fixed["feature_category"]))
    if fixed.get("mixers", "all") != "all":
        parts.append(line_label("mixers", fixed["mixers"]))
    prompts = ""
    if {"dataset", "dataset_filter"} <= set(frame.columns):
        selections = frame[["dataset", "dataset_filter"]].drop_duplicates().itertuples(index=False)
        prompts = "prompts: " + "; ".join(f"{dataset} ({selection})" for dataset, selection in selections)
    lines = [*join_wrapped(parts, width), *textwrap.wrap(prompts, width, break_on_hyphens=False)]
    return "\n".join(plain_text(line) for line in lines)


@styled
def info_flow_figure(
    frame: pd.DataFrame,
    *,
    lines: str = "model",
    metric: Metric = "diff",
    x: XAxis = "depth",
    sources: Sequence[str] | None = None,
    confidence: float = 0.95,
    ylim: tuple[float, float] | None = None,
    title: str | None = None,
    panel_size: tuple[float, float] = (3.0, 2.6),
) -> Figure:
    """Mean ``metric`` per window with its ``confidence`` band (percentile bootstrap, see
    ``infoflow.plots.aggregate``), one panel per source.

    ``frame``: info-flow rows (``store.frame`` of one run, or ``runs_frame`` of several, which adds
    ``model``, ``n_layers``, ``mixers`` and the prompt selection). ``lines`` is the column drawn as lines (e.g.
    ``mixers``: through attention vs through the recurrence vs all layers, runs of one hybrid model); the other
    key columns (model, target, feature category, window size, mixers) must hold one value each. ``x`` is
    ``depth`` (percent, 100 % = last window start) or ``window`` (first layer of the window).
    """
    if frame.empty:
        raise ValueError("no info-flow rows to plot")
    if lines not in frame.columns:
        raise ValueError(f"no column {lines!r} to draw as lines; columns: {list(frame.columns)}")
    fixed = _single_values(frame, lines)
    present = ordered_sources(frame["source"].unique())
    panels = present if sources is None else list(sources)
    missing = [s for s in panels if s not in present]
    if missing or not panels:
        raise ValueError(f"no rows for sources {missing or panels}; the rows have sources {present}")
    frame = frame[frame["source"].isin(panels)]
    values = ordered_lines(lines, frame[lines].tolist())
    colors = line_colors(lines, values)
    n_prompts = frame.groupby(lines)["prompt_id"].nunique()
    if x == "depth":
        points, x_column = aggregate_by_depth(frame, [lines, "source"], metric, confidence), "depth"
    elif x == "window":
        points, x_column = aggregate(frame, [lines, "source"], metric, confidence), "window_start"
    else:
        raise ValueError(f"x must be 'depth' or 'window', not {x!r}")

    labels = [plain_text(f"{line_label(lines, v)} (n = {n_prompts.get(v, 0)})") for v in values]
    legend_width = (max(len(label) for label in labels) * CHAR_WIDTH + 40) / 72  # inches: text + handle
    n_cols = min(len(panels), PANEL_COLUMNS)
    n_rows = math.ceil(len(panels) / n_cols)
    width = max(panel_size[0] * n_cols, legend_width + 0.4)
    legend_cols = max(1, min(len(values), int(width / legend_width)))
    legend_cols = math.ceil(len(values) / math.ceil(len(values) / legend_cols))  # balance the legend rows
    legend_rows = math.ceil(len(values) / legend_cols)
    fig = Figure(figsize=(width, panel_size[1] * n_rows + 0.9 + 0.2 * legend_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, sharex=True, sharey=True, squeeze=False).flat
    reference = 0.0 if metric == "diff" else 100.0
    target = fixed.get("target", "")
    for i, ax in enumerate(axes):
        if i >= len(panels):
            ax.set_visible(False)
            continue
        source = panels[i]
        ax.axhline(reference, color="0.4", linewidth=0.8, linestyle="--", zorder=1)
        for value in values:
            line = points[(points[lines] == value) & (points["source"] == source)]
            ax.fill_between(line[x_column], line["low"], line["high"], color=colors[value], alpha=0.2, linewidth=0)
            ax.plot(line[x_column], line["mean"], color=colors[value], zorder=3)
        ax.set_title(plain_text(f"{source} → {target}" if target else source))
        if x == "depth":
            ax.set_xlim(0, 100)
            ax.xaxis.set_major_locator(MultipleLocator(20))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ylim is not None:
            ax.set_ylim(*ylim)
        if i + n_cols >= len(panels):  # no panel below: this one carries the x axis
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel(X_LABELS[x])
        if i % n_cols == 0:
            ax.set_ylabel(Y_LABELS[metric])

    handles = [Line2D([], [], color=colors[v]) for v in values]
    fig.legend(handles, labels, loc="outside lower center", ncol=legend_cols)
    fig.suptitle(title if title is not None else _title(fixed, frame, width=int(width * 12)))
    return fig
