"""Summary tables of a run's rows (tidy DataFrames): where knockouts hurt most, what failed, how well a
model knows the prompts."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from infoflow.plots.aggregate import aggregate, depth_of, last_window_start
from infoflow.plots.style import ordered_sources

FLOW_KEYS = ("target", "source", "feature_category", "window_size")
QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def flow_minima(frame: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per target, source, feature category and window size: the window where the mean ``diff`` is lowest.

    Columns: the keys (with ``model`` where the frame has it), ``n`` (prompts), ``min_mean_diff``,
    ``low``/``high`` (its interval), ``window_start``, ``depth`` (percent, 100 % = last window start; uses
    ``n_layers`` where the frame has it) and ``hit_rate`` (percent of prompts still top-1 in that window).
    """
    keys = [k for k in ("model", *FLOW_KEYS) if k in frame.columns]
    diff = aggregate(frame, keys, "diff", confidence)
    hit = aggregate(frame, keys, "hit", confidence)
    diff["hit_rate"] = hit["mean"].to_numpy()  # same groups, same order
    rows = diff.loc[diff.groupby(keys, sort=False)["mean"].idxmin()].reset_index(drop=True)
    lasts = {key: last_window_start(group) for key, group in frame.groupby(keys, sort=False)}
    rows["depth"] = [
        float(depth_of(np.array([start]), lasts[tuple(key)])[0])
        for start, key in zip(rows["window_start"], rows[keys].itertuples(index=False), strict=True)
    ]
    order = {s: i for i, s in enumerate(ordered_sources(rows["source"].unique()))}
    rows = rows.sort_values(keys, key=lambda c: c.map(order) if c.name == "source" else c).reset_index(drop=True)
    rows = rows.rename(columns={"mean": "min_mean_diff"})
    return rows[[*keys, "n", "min_mean_diff", "low", "high", "window_start", "depth", "hit_rate"]]


def error_summary(errors: pd.DataFrame, examples: int = 3) -> pd.DataFrame:
    """Per-prompt errors grouped by reason, quoted parts (a subject, a token) blanked out so that the same
    failure groups together: ``reason`` (one example in full), ``pattern``, ``count``, ``prompt_ids``."""
    if errors.empty:
        return pd.DataFrame(columns=["pattern", "reason", "count", "prompt_ids"])
    patterns = errors.assign(pattern=errors["reason"].map(lambda r: QUOTED.sub("'…'", str(r))))
    grouped = patterns.sort_values("prompt_id").groupby("pattern", sort=False)
    out = grouped.agg(
        reason=("reason", "first"), count=("prompt_id", "size"), prompt_ids=("prompt_id", lambda p: list(p[:examples]))
    )
    return out.reset_index().sort_values(["count", "pattern"], ascending=[False, True]).reset_index(drop=True)


def evaluate_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row: prompts, top-1 accuracy (%), mean and median ``p0``, median rank."""
    return pd.DataFrame(
        {
            "n": [len(frame)],
            "top1_accuracy": [100.0 * frame["correct"].mean() if len(frame) else float("nan")],
            "mean_p0": [frame["p0"].mean()],
            "median_p0": [frame["p0"].median()],
            "median_rank": [frame["rank"].median()],
        }
    )


def attention_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per prompt of an attention run: its tokens (count and text), the layers exported and the matrices per layer
    (the mean over features counted as one)."""
    rows = []
    for prompt_id, part in frame.groupby("prompt_id", sort=True):
        tokens = list(part["tokens"].iloc[0])
        layers = sorted(int(layer) for layer in part["layer"].unique())
        rows.append(
            {
                "prompt": int(prompt_id),
                "tokens": len(tokens),
                "text": "".join(map(str, tokens)),
                "layers": f"{layers[0]}–{layers[-1]} ({len(layers)})" if len(layers) > 1 else str(layers[0]),
                "matrices per layer": int(part.groupby("layer")["feature"].nunique().max()),
            }
        )
    return pd.DataFrame(rows)
