"""Recall page logic: the stored runs of causal tracing, sublayer knockout and vocabulary projection drawn with
the paper-style figures of ``infoflow.plots``, and the logit-lens table of one prompt."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from infoflow.app.heatmaps import SPECIAL_TOKEN
from infoflow.plots import runs_frame
from infoflow.plots.causal_tracing import causal_tracing_figure
from infoflow.plots.sublayer_knockout import sublayer_knockout_figure
from infoflow.plots.vocab_projection import vocab_projection_figure
from infoflow.store import ResultsStore

METHODS = {
    "causal_tracing": "Causal tracing",
    "sublayer_knockout": "Sublayer knockout",
    "vocab_projection": "Vocabulary projection",
}
TRACING_VALUES = {"p": "p(target) restored", "effect": "indirect effect p − p(corrupted)"}


def load_rows(kind: str, store: ResultsStore, run_ids: Sequence[str]) -> pd.DataFrame:
    """The rows of the chosen runs of ``kind`` (one of ``METHODS``)."""
    if kind not in METHODS:
        raise ValueError(f"unknown recall method {kind!r}; choose {', '.join(METHODS)}")
    if not run_ids:
        raise ValueError(f"choose at least one {METHODS[kind].lower()} run")
    return runs_frame(store, list(run_ids), kind)


def prompt_texts(frame: pd.DataFrame) -> dict[int, str]:
    """{prompt id: its tokens joined, special tokens left out} for causal-tracing rows (a row per position)."""
    tokens = frame.drop_duplicates(["prompt_id", "position"]).sort_values(["prompt_id", "position"])
    texts = {int(p): "".join(rows["token"].astype(str)) for p, rows in tokens.groupby("prompt_id")}
    return {p: SPECIAL_TOKEN.sub("", text).strip() for p, text in texts.items()}


def tracing_figures(frame: pd.DataFrame, prompt_id: int | None, value: str) -> list[Figure]:
    """A causal-tracing figure per run (its sites as panels): ``prompt_id``'s grid, or the mean by part of the
    prompt (None); ``value`` is ``p`` or ``effect``."""
    figures = []
    for _, rows in frame.groupby("run_id", sort=False):
        if prompt_id is not None and prompt_id not in set(rows["prompt_id"]):
            continue
        figure = causal_tracing_figure(rows, prompt_id, value=value)
        figure.suptitle(f"{rows['model'].iloc[0]} · {figure.get_suptitle()}")
        figures.append(figure)
    if not figures:
        raise ValueError(f"no chosen causal-tracing run holds prompt {prompt_id}")
    return figures


def knockout_choices(frame: pd.DataFrame) -> tuple[list[str], list[int]]:
    """The targets and window sizes of sublayer-knockout rows."""
    return sorted(frame["target"].unique()), sorted(int(w) for w in frame["window_size"].unique())


def knockout_figure(frame: pd.DataFrame, target: str, window_size: int, metric: str = "diff") -> Figure:
    """The sublayer-knockout curves of one target and window size, a panel per run's model."""
    rows = frame[(frame["target"] == target) & (frame["window_size"] == window_size)]
    if rows.empty:
        raise ValueError(f"no sublayer-knockout rows at the {target} token with window size {window_size}")
    return sublayer_knockout_figure(rows, metric=metric)  # type: ignore[arg-type]


def projection_figures(frame: pd.DataFrame) -> list[Figure]:
    """The attribute and extraction rates of each run."""
    figures = []
    for _, rows in frame.groupby("run_id", sort=False):
        figure = vocab_projection_figure(rows)
        figure.suptitle(f"{rows['model'].iloc[0]} · {figure.get_suptitle()}")
        figures.append(figure)
    return figures


def logit_lens_table(frame: pd.DataFrame, run_id: str, prompt_id: int, position_role: str) -> pd.DataFrame:
    """One prompt's logit lens at ``position_role`` (subject_last or last): per layer and site, the top tokens
    (with their probabilities), the target's probability and rank."""
    rows = frame[(frame["run_id"] == run_id) & (frame["prompt_id"] == prompt_id)]
    rows = rows[rows["position_role"] == position_role].sort_values(["layer", "site"])
    if rows.empty:
        raise ValueError(f"no vocabulary-projection rows for prompt {prompt_id} at {position_role}")

    def top(cell: str) -> str:
        return "  ".join(f"{text!r} {p:.2f}" for _, text, p in json.loads(cell))

    return pd.DataFrame(
        {
            "layer": rows["layer"].astype(int),
            "site": rows["site"],
            "top tokens": rows["top_tokens"].map(top),
            "p(target)": rows["target_p"].round(4),
            "target rank": rows["target_rank"].astype(int),
        }
    ).reset_index(drop=True)
