"""Plotly figures of the app's frames: curves with bands, heatmaps side by side, mixing matrices, histograms."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from infoflow.plots.style import FEATURE_COLORS, diverging_colorscale, feature_label, ordered_sources
from infoflow.plots.style import line_colors as style_line_colors

HEATMAP_SCALE = diverging_colorscale()  # red: the knockout lowers the target's probability (as infoflow.plots)
PANEL_COLUMNS = 4


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def curves_figure(
    points: pd.DataFrame,
    *,
    x_label: str,
    y_label: str,
    reference: float = 0.0,
    title: str | None = None,
    integer_x: bool = False,
    colors: dict[str, str] | None = None,
) -> go.Figure:
    """One panel per ``source``, one line per ``line`` with its [low, high] band (``curve_points`` frames), in
    ``colors`` (line -> colour; default: ``compare.line_colors``, the figures' colours); ``integer_x``: ticks at
    whole numbers (window indices)."""
    sources = ordered_sources(points["source"].unique())
    lines = list(dict.fromkeys(points["line"]))
    colors = colors or line_colors(lines)
    n_cols = min(PANEL_COLUMNS, max(1, len(sources)))
    n_rows = math.ceil(len(sources) / n_cols)
    fig = make_subplots(
        rows=n_rows, cols=n_cols, subplot_titles=[str(s) for s in sources], shared_yaxes=True, shared_xaxes=True
    )
    for i, source in enumerate(sources):
        row, col = i // n_cols + 1, i % n_cols + 1
        for line in lines:
            part = points[(points["source"] == source) & (points["line"] == line)].sort_values("x")
            if part.empty:
                continue
            color = colors[line]
            band_x = np.concatenate([part["x"], part["x"][::-1]])
            band_y = np.concatenate([part["high"], part["low"][::-1]])
            fig.add_trace(
                go.Scatter(
                    x=band_x, y=band_y, mode="lines", fill="toself", fillcolor=_rgba(color, 0.2), line={"width": 0},
                    hoverinfo="skip", showlegend=False, legendgroup=str(line),
                ),
                row=row, col=col,
            )  # fmt: skip
            n = int(part["n"].max())
            fig.add_trace(
                go.Scatter(
                    x=part["x"], y=part["mean"], mode="lines+markers", name=f"{line} (n = {n})",
                    line={"color": color}, marker={"size": 4}, legendgroup=str(line), showlegend=i == 0,
                    customdata=np.stack([part["low"], part["high"], part["n"]], axis=-1),
                    hovertemplate="x %{x:.1f}: %{y:.2f} [%{customdata[0]:.2f}, %{customdata[1]:.2f}], "
                    "n = %{customdata[2]}<extra>" + str(line) + "</extra>",
                ),
                row=row, col=col,
            )  # fmt: skip
        fig.add_hline(y=reference, line={"dash": "dash", "color": "#888", "width": 1}, row=row, col=col)
        fig.update_xaxes(title_text=x_label if row == n_rows else None, row=row, col=col)
        if integer_x:
            fig.update_xaxes(dtick=1, row=row, col=col)
    fig.update_yaxes(title_text=y_label, col=1)
    fig.update_layout(
        height=320 * n_rows + 80, title=title, legend={"orientation": "h", "y": -0.2}, margin={"t": 60, "b": 40}
    )
    return fig


@dataclass(frozen=True)
class HeatmapPanel:
    """One model's tokens × windows grid of ``p − p0`` for one prompt, its subject's rows and target if known."""

    title: str
    values: np.ndarray  # [tokens, windows]
    tokens: list[str]
    p0: float
    subject: tuple[int, ...] = ()
    target: str | None = None


def column_labels(n_windows: int, x: str) -> list[str]:
    """Window labels: first layer of the window, or depth percent (100 % = last window start)."""
    if x == "window":
        return [str(i) for i in range(n_windows)]
    last = max(1, n_windows - 1)
    return [f"{100 * i / last:.0f}%" if n_windows > 1 else "0%" for i in range(n_windows)]


def heatmap_figure(
    panels: Sequence[HeatmapPanel], *, x: str = "depth", limit: float | None = 0.3, title: str | None = None
) -> go.Figure:
    """Panels side by side, one colour scale ±``limit`` (None: the largest change)."""
    if not panels:
        raise ValueError("no heatmap to draw")
    scale = limit or max(float(np.nanmax(np.abs(p.values))) for p in panels) or 1e-9
    fig = make_subplots(
        rows=1, cols=len(panels), subplot_titles=[f"{p.title} · p0 = {p.p0:.3f}" for p in panels],
        horizontal_spacing=0.12 if len(panels) > 1 else 0.02,
    )  # fmt: skip
    for i, panel in enumerate(panels):
        # subject rows in bold, marked ▸ (plotly category labels take a little HTML)
        labels = [f"<b>▸ {j}: {t}</b>" if j in panel.subject else f"{j}: {t}" for j, t in enumerate(panel.tokens)]
        fig.add_trace(
            go.Heatmap(
                z=panel.values, x=column_labels(panel.values.shape[1], x), y=labels, zmin=-scale, zmax=scale,
                colorscale=HEATMAP_SCALE, colorbar={"title": "p − p0"}, showscale=i == len(panels) - 1,
                hovertemplate="token %{y}<br>window %{x}<br>p − p0 = %{z:.3f}<extra></extra>",
            ),
            row=1, col=i + 1,
        )  # fmt: skip
        fig.update_yaxes(autorange="reversed", type="category", row=1, col=i + 1)
        fig.update_xaxes(title_text="Depth (%)" if x == "depth" else "First layer of window", type="category",
                         row=1, col=i + 1)  # fmt: skip
    targets = {p.target for p in panels if p.target is not None}
    if targets or any(p.subject for p in panels):
        marks = [f"target {' / '.join(repr(t) for t in sorted(targets))}"] if targets else []
        marks += ["subject rows ▸ bold"] if any(p.subject for p in panels) else []
        title = " · ".join([*([title] if title else []), *marks])
    n_tokens = max(len(p.tokens) for p in panels)
    fig.update_layout(height=max(320, 24 * n_tokens + 160), title=title, margin={"t": 80})
    return fig


def matrix_figure(matrix: np.ndarray, tokens: Sequence[str], title: str) -> go.Figure:
    """A mixing matrix [target, source] with token labels (rows: receiving position): signed weights on the
    diverging map centred at 0, symmetric about it; the future (source after target) is blank, not 0."""
    labels = [f"{i}: {t}" for i, t in enumerate(tokens)]
    shown = np.where(np.tril(np.ones_like(matrix, dtype=bool)), matrix, np.nan)  # [T, T], NaN above the diagonal
    limit = float(np.nanmax(np.abs(shown))) if np.isfinite(shown).any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=shown, x=labels, y=labels, colorscale=HEATMAP_SCALE, zmid=0.0, zmin=-limit, zmax=limit,
            colorbar={"title": "α (mixing weight)"},
            hovertemplate="target %{y}<br>source %{x}<br>α = %{z:.4f}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_yaxes(autorange="reversed", type="category", title_text="target (receives)")
    fig.update_xaxes(type="category", title_text="source (sends)")
    fig.update_layout(title=title, height=max(380, 26 * len(tokens) + 180))
    return fig


def histogram_figure(
    frame: pd.DataFrame, value: str, color: str, title: str, colors: dict[str, str], x_label: str
) -> go.Figure:
    """Stacked histogram of ``value`` coloured by the ``color`` column (``colors``: category -> colour, in order)."""
    fig = go.Figure()
    for category, hex_color in colors.items():
        part = frame[frame[color] == category]
        fig.add_trace(go.Histogram(x=part[value], name=f"{category} ({len(part)})", marker_color=hex_color))
    fig.update_layout(barmode="stack", title=title, xaxis_title=x_label, yaxis_title="features", height=380)
    return fig


def line_colors(lines: Sequence[str]) -> dict[str, str]:
    """A colour per line label, as the static figures colour them: feature categories by their fixed colours
    (a label that names one), anything else by its model's colour (``plots.style``)."""
    by_feature = {label: c for f, c in FEATURE_COLORS.items() for label in (feature_label(f),)}
    named = {line: next((c for label, c in by_feature.items() if label in line), None) for line in lines}
    if all(named.values()) and len(set(named.values())) == len(lines):
        return {line: str(c) for line, c in named.items()}
    return {str(k): v for k, v in style_line_colors("model", list(lines)).items()}
