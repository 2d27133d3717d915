"""Rows of several runs as one frame, each row labelled with its run's model, depth and prompt filter."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pandas as pd

from infoflow.naming import short_model_name
from infoflow.plots.facts import run_facts, with_facts
from infoflow.store import ResultsStore

INFO_FLOW = "info_flow"


def run_labels(store: ResultsStore, run_ids: Sequence[str], mixers_apart: bool = False) -> dict[str, str]:
    """A line label per run: its model (short name), or its run name where two runs share a model, unless
    ``mixers_apart`` and their ``mixers`` tell them apart (one model's split through attention and through the
    recurrence: info-flow figures draw the mixers column)."""
    runs = {run_id: store.run(run_id) for run_id in run_ids}
    models = {run_id: short_model_name(run.manifest.model_id) for run_id, run in runs.items()}
    kept_apart = {r: run.manifest.params.get("mixers", "all") if mixers_apart else "" for r, run in runs.items()}
    shared = {model for (model, _), count in Counter((models[r], kept_apart[r]) for r in runs).items() if count > 1}
    return {r: runs[r].name if m in shared else m for r, m in models.items()}


def runs_frame(store: ResultsStore, run_ids: Sequence[str], kind: str) -> pd.DataFrame:
    """The rows of ``run_ids`` (all of experiment ``kind``) with columns ``model`` (label), ``model_id``, ``n_layers``
    (from the manifest's params, NaN if absent), ``mixers`` (the mixers its knockouts reach: all, attention,
    recurrent, ...), ``dataset`` and ``dataset_filter`` added; heatmap rows also get their prompt's subject and
    target (``plots.facts.with_facts``) where they are known."""
    runs = [store.run(r) for r in run_ids]
    wrong = [f"{run.run_id} ({run.manifest.kind})" for run in runs if run.manifest.kind != kind]
    if wrong:
        raise ValueError(f"expected {kind} runs, got {', '.join(wrong)}")
    labels = run_labels(store, [run.run_id for run in runs], mixers_apart=kind == INFO_FLOW)
    frames = [
        store.frame(run.run_id).assign(
            model=labels[run.run_id],
            model_id=run.manifest.model_id,
            n_layers=run.manifest.params.get("n_layers"),
            mixers=run.manifest.params.get("mixers", "all"),
            dataset=run.manifest.dataset,
            dataset_filter=run.manifest.dataset_filter,
        )
        for run in runs
    ]
    if kind == "heatmap":
        frames = [with_facts(f, run_facts(store, run.run_id)) for f, run in zip(frames, runs, strict=True)]
    nonempty = [f for f in frames if not f.empty]  # concatenating empty frames is deprecated in pandas
    frame = pd.concat(nonempty, ignore_index=True) if nonempty else frames[0]
    frame["n_layers"] = pd.to_numeric(frame["n_layers"], errors="coerce")
    return frame


def mixer_splits(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """Of a ``runs_frame`` of info-flow runs: per model and prompt selection whose runs differ in ``mixers`` (each
    value from one run), their rows of the category 'all'. Drawn with ``lines="mixers"``, each shows "through
    attention" and "through the recurrence" next to "all layers"."""
    splits = []
    for _, rows in frame.groupby(["model", "dataset", "dataset_filter"], sort=True):
        runs_per_value = rows.groupby("mixers")["run_id"].nunique()
        if len(runs_per_value) > 1 and (runs_per_value == 1).all():
            splits.append(rows[rows["feature_category"] == "all"])
    return splits


def one_run_per_model(rows: pd.DataFrame) -> pd.DataFrame:
    """``runs_frame`` rows with one run per model (the one with the most prompts, the later one of a tie), each
    labelled with its model's short name: a comparison of models shows each model once."""
    prompts = rows.groupby("run_id", sort=False)["prompt_id"].nunique()
    models = rows.groupby("run_id", sort=False)["model_id"].first()
    best: dict[str, str] = {}
    for run_id, n in prompts.items():
        model = str(models[run_id])
        if model not in best or n >= prompts[best[model]]:
            best[model] = str(run_id)
    kept = rows[rows["run_id"].isin(list(best.values()))]
    return kept.assign(model=[short_model_name(m) for m in kept["model_id"]])
