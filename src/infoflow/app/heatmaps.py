"""Heatmaps page logic: per prompt, tokens × windows of ``p − p0`` for heatmap runs, side by side across
models (``infoflow.plots.heatmap_matrix``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from infoflow.app.figures import HeatmapPanel
from infoflow.plots import heatmap_matrix, runs_frame
from infoflow.plots.heatmap import heatmap_marks
from infoflow.store import ResultsStore

SPECIAL_TOKEN = re.compile(r"<\|[^|]*\|>|<s>|</s>")


def load_rows(store: ResultsStore, run_ids: Sequence[str]) -> pd.DataFrame:
    if not run_ids:
        raise ValueError("choose at least one heatmap run")
    return runs_frame(store, list(run_ids), "heatmap")


def prompt_choices(frame: pd.DataFrame) -> dict[int, str]:
    """{prompt_id: its text (tokens joined)} for the prompts present in every chosen run (any run if none is
    shared), first prompts first."""
    per_run = [set(rows["prompt_id"].astype(int)) for _, rows in frame.groupby("run_id")]
    shared = set.intersection(*per_run) if per_run else set()
    ids = sorted(shared or set.union(*per_run)) if per_run else []
    texts = {}
    for prompt_id in ids:
        rows = frame[(frame["prompt_id"] == prompt_id) & (frame["run_id"] == frame["run_id"].iloc[0])]
        if rows.empty:
            rows = frame[frame["prompt_id"] == prompt_id]
        first = rows[rows["run_id"] == rows["run_id"].iloc[0]]
        tokens = first.drop_duplicates("position").sort_values("position")["token"].astype(str)
        texts[prompt_id] = SPECIAL_TOKEN.sub("", "".join(tokens)).strip()
    return texts


def window_sizes(frame: pd.DataFrame) -> list[int]:
    return sorted(int(w) for w in frame["window_size"].unique())


def panels(frame: pd.DataFrame, prompt_id: int, window_size: int | None = None) -> list[HeatmapPanel]:
    """One panel per model (run) holding this prompt and window size."""
    rows = frame[frame["prompt_id"] == prompt_id]
    if window_size is not None:
        rows = rows[rows["window_size"] == window_size]
    if rows.empty:
        raise ValueError(f"no heatmap rows for prompt {prompt_id} with window size {window_size}")
    key = "run_id" if "run_id" in rows.columns else "model"
    out = []
    for run in dict.fromkeys(rows[key]):
        part = rows[rows[key] == run]
        values, labels, p0 = heatmap_matrix(part)
        title = str(part["model"].iloc[0]) if "model" in part.columns else str(run)
        subject, target = heatmap_marks(part, len(labels))
        tokens = [label.removesuffix("*") for label in labels]
        out.append(HeatmapPanel(title, values, tokens, p0, tuple(subject), target))
    return out
