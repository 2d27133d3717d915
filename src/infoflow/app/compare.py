"""Compare page logic: info-flow rows of chosen runs, narrowed by source, feature category, window size,
target and a prompt filter; mean curves with 95 % bands (``infoflow.plots.aggregate``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from infoflow.experiments.filters import FilterContext, FilterError, select
from infoflow.experiments.selection import latest_evaluate_ranks
from infoflow.naming import short_filter
from infoflow.plots import aggregate, aggregate_by_depth, info_flow_figure, runs_frame
from infoflow.plots.aggregate import Metric
from infoflow.plots.style import feature_label, ordered_sources, png_bytes
from infoflow.store import ResultsStore

# Columns that may vary between lines (everything else is fixed per panel).
LINE_COLUMNS = ("model", "target", "feature_category", "window_size", "mixers")
X_LABELS = {"depth": "Layer depth (%)", "window": "First layer of window"}
Y_LABELS = {"diff": "Change in p(target) (%)", "hit": "Target still top-1 (%)"}


def runs_of_kind(store: ResultsStore, kind: str) -> pd.DataFrame:
    """The runs of one experiment kind with a readable ``label`` (name, dataset and short filter, status, id)."""
    runs = store.runs()
    if runs.empty:
        return runs.assign(label=pd.Series(dtype=str))
    runs = runs[runs["kind"] == kind].reset_index(drop=True)
    labels = [
        f"{n} · {d} ({short_filter(f, 24)}) · {s} · {r[:8]}"
        for n, d, f, s, r in zip(
            runs["name"], runs["dataset"], runs["dataset_filter"], runs["status"], runs["run_id"], strict=True
        )
    ]
    return runs.assign(label=labels)


@dataclass(frozen=True)
class Selection:
    """What to draw from the chosen runs' rows (empty tuple: everything present)."""

    sources: tuple[str, ...] = ()
    feature_categories: tuple[str, ...] = ()
    window_sizes: tuple[int, ...] = ()
    targets: tuple[str, ...] = ()
    prompt_filter: str = "all"
    columns: dict[str, str] = field(default_factory=dict, hash=False)


def load_rows(store: ResultsStore, run_ids: Sequence[str]) -> pd.DataFrame:
    """Rows of the info-flow runs (labelled with their model), or a clear error when none is chosen."""
    if not run_ids:
        raise ValueError("choose at least one info-flow run")
    return runs_frame(store, list(run_ids), "info_flow")


def available(frame: pd.DataFrame) -> dict[str, list]:
    """The values present of each selectable column."""
    return {
        "sources": ordered_sources(frame["source"].unique()),
        "feature_categories": sorted(frame["feature_category"].unique()),
        "window_sizes": sorted(int(w) for w in frame["window_size"].unique()),
        "targets": sorted(frame["target"].unique()),
    }


def prompt_ids_of(store: ResultsStore, frame: pd.DataFrame, expression: str) -> set[tuple[str, int]]:
    """(run_id, prompt_id) pairs that ``expression`` selects, per run (its model and dataset's ranks)."""
    kept: set[tuple[str, int]] = set()
    for run_id, rows in frame.groupby("run_id"):
        manifest = store.run(str(run_id)).manifest

        def ranks(model: str, dataset: str = manifest.dataset) -> dict[int, int]:
            found = latest_evaluate_ranks(store, model, dataset)
            if found is None:
                raise FilterError(
                    f"no evaluate results for model {model!r} on dataset {dataset!r} in this store; "
                    f"run `infoflow evaluate --model {model} --dataset {dataset}` first"
                )
            return found

        universe = frozenset(int(p) for p in rows["prompt_id"].unique())
        chosen = select(expression, FilterContext(universe=universe, model=manifest.model_id, ranks=ranks))
        kept |= {(str(run_id), int(p)) for p in chosen & universe}
    return kept


def apply_selection(store: ResultsStore, frame: pd.DataFrame, selection: Selection) -> pd.DataFrame:
    """The rows the selection keeps; an empty result is an error that says which choice emptied it."""
    out = frame
    for column, values in (
        ("source", selection.sources),
        ("feature_category", selection.feature_categories),
        ("window_size", selection.window_sizes),
        ("target", selection.targets),
    ):
        if values:
            out = out[out[column].isin(list(values))]
            if out.empty:
                raise ValueError(f"no rows with {column} in {list(values)} in the chosen runs")
    expression = selection.prompt_filter.strip() or "all"
    if expression != "all":
        kept = prompt_ids_of(store, out, expression)
        mask = [(r, int(p)) in kept for r, p in zip(out["run_id"], out["prompt_id"], strict=True)]
        out = out[mask]
        if out.empty:
            raise ValueError(f"the prompt filter {expression!r} keeps no prompt of the chosen runs")
    return out.reset_index(drop=True)


def varying_columns(frame: pd.DataFrame) -> list[str]:
    """Line columns that hold several values (the lines are their combinations)."""
    return [c for c in LINE_COLUMNS if c in frame.columns and frame[c].nunique() > 1]


def with_lines(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows with a ``line`` label: the values of the varying columns (the model when nothing varies)."""
    columns = varying_columns(frame) or ["model"]
    shown = frame[columns].astype(str)
    if "feature_category" in columns:  # one name for each category, as in the figures
        shown["feature_category"] = shown["feature_category"].map(feature_label)
    return frame.assign(line=shown.agg(" · ".join, axis=1))


def curve_points(frame: pd.DataFrame, metric: Metric = "diff", x: str = "depth") -> pd.DataFrame:
    """Per line, source and x: ``mean``, ``low``/``high`` (95 % bootstrap interval) and ``n`` prompts; columns
    ``line``, ``source``, ``x``, ``mean``, ``low``, ``high``, ``n``."""
    lined = with_lines(frame)
    if x == "depth":
        # each line holds one model depth and window size, so depth % is well defined per line
        points = aggregate_by_depth(lined, ["line", "source"], metric)
        points = points.rename(columns={"depth": "x"})
    elif x == "window":
        points = aggregate(lined, ["line", "source"], metric).rename(columns={"window_start": "x"})
    else:
        raise ValueError(f"x must be 'depth' or 'window', not {x!r}")
    return points[["line", "source", "x", "mean", "low", "high", "n"]].dropna(subset=["mean"]).reset_index(drop=True)


def png_figure(frame: pd.DataFrame, metric: Metric = "diff", x: str = "depth") -> bytes:
    """The same curves as a publication PNG (``infoflow.plots.info_flow_figure``)."""
    columns = varying_columns(frame)
    if len(columns) == 1:
        figure = info_flow_figure(frame, lines=columns[0], metric=metric, x=x)
    else:  # several columns vary: one line per combination, labelled in the model column
        lined = with_lines(frame)
        folded = lined.assign(model=lined["line"]).drop(columns=[c for c in columns if c != "model"])
        figure = info_flow_figure(folded, lines="model", metric=metric, x=x)
    return png_bytes(figure)
