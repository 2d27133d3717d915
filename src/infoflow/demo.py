"""The main job on the built-in default: a 4-source info-flow sweep and heatmaps, then the HTML report."""

from __future__ import annotations

from pathlib import Path

from infoflow.data import load_dataset
from infoflow.data.spans import TokenType
from infoflow.engines.fast import FastEngine
from infoflow.experiments.experiments import heatmap, info_flow
from infoflow.experiments.filters import describe_candidates, describe_selection
from infoflow.experiments.plans import InfoFlowParams
from infoflow.experiments.runner import RunContext
from infoflow.experiments.selection import choose_prompts, sample_prompts
from infoflow.interventions.knockout import FeatureCategory, default_window_size
from infoflow.models import load_model
from infoflow.report import write_report
from infoflow.store import ResultsStore


def run_demo(
    out_dir: Path,
    model: str = "builtin-mamba1",
    n_prompts: int = 100,
    n_heatmaps: int = 3,
    show_progress: bool = True,
    n_candidates: int = 1000,
) -> Path:
    """Run the demo into ``out_dir`` (results store and report); returns the report's path.

    The ``n_prompts`` prompts are drawn among those the model answers correctly in a seeded sample of
    ``n_candidates`` synthetic prompts.
    """
    loaded = load_model(model)
    prompts = sample_prompts(load_dataset("synthetic"), n_candidates, seed=0)  # evaluating all 15,000 takes minutes
    out_dir.mkdir(parents=True, exist_ok=True)
    window_size = default_window_size(loaded.model.n_layers)
    with ResultsStore.open(out_dir / "results.duckdb") as store:
        selection = describe_candidates(describe_selection("correct", n_prompts, seed=0), len(prompts), seed=0)
        context = RunContext(loaded, FastEngine(loaded.model), store, "synthetic", selection, show_progress)
        chosen = choose_prompts(context, prompts, "correct", limit=n_prompts, seed=0)
        runs = [info_flow(context, chosen, InfoFlowParams(window_sizes=(window_size,)))]
        if loaded.model.has_decay_features:  # which Mamba features carry the subject: all / slow-decay / fast-decay
            categories = InfoFlowParams(
                sources=(TokenType.SUBJECT,), feature_categories=tuple(FeatureCategory), window_sizes=(window_size,)
            )
            runs.append(info_flow(context, chosen, categories))
        runs.append(heatmap(context, chosen[:n_heatmaps], window_size))
        return write_report(store, runs, out_dir / "report.html")
