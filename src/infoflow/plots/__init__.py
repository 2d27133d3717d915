"""Static figures (matplotlib: PNG, PDF, SVG): info-flow curves with confidence bands, per-prompt heatmaps,
and the aggregations and summary tables behind them."""

from infoflow.plots.aggregate import aggregate, aggregate_by_depth, t_half_width
from infoflow.plots.heatmap import heatmap_figure, heatmap_matrix
from infoflow.plots.info_flow import info_flow_figure
from infoflow.plots.load import mixer_splits, runs_frame
from infoflow.plots.style import save_figure
from infoflow.plots.summary import error_summary, evaluate_summary, flow_minima

__all__ = [
    "aggregate",
    "aggregate_by_depth",
    "error_summary",
    "evaluate_summary",
    "flow_minima",
    "heatmap_figure",
    "heatmap_matrix",
    "info_flow_figure",
    "mixer_splits",
    "runs_frame",
    "save_figure",
    "t_half_width",
]
