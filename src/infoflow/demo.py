"""The main job on the built-in default: a 4-source info-flow sweep and heatmaps, then the HTML report."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from infoflow.data.spans import TokenType
from infoflow.experiments.heatmap import heatmap
from infoflow.experiments.info_flow import InfoFlowParams, info_flow
from infoflow.experiments.request import RunRequest, open_run
from infoflow.interventions.knockout import FeatureCategory, default_window_size
from infoflow.report import write_report


def run_demo(
    out_dir: Path,
    request: RunRequest | None = None,
    n_prompts: int = 100,
    n_heatmaps: int = 3,
    n_candidates: int = 1000,
) -> Path:
    """Run the demo into ``out_dir`` (results store and report); returns the report's path.

    ``request`` gives the model (default: builtin-mamba1), device, threads and progress; the demo sets the data:
    ``n_prompts`` synthetic prompts drawn among those the model answers correctly in a seeded sample of
    ``n_candidates`` (evaluating all 15,000 takes minutes).
    """
    request = replace(
        request or RunRequest(),
        dataset="synthetic",
        dataset_file=None,
        filter="correct",
        limit=n_prompts,
        seed=0,
        candidates=n_candidates,
        store=out_dir / "results.duckdb",
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    with open_run(request) as run:
        model = run.loaded.model
        window_size = default_window_size(model.n_layers)
        context, chosen = run.choose()
        runs = [info_flow(context, chosen, InfoFlowParams(window_sizes=(window_size,)))]
        if model.has_decay_features:  # which Mamba features carry the subject: all / slow-decay / fast-decay
            categories = InfoFlowParams(
                sources=(TokenType.SUBJECT,), feature_categories=tuple(FeatureCategory), window_sizes=(window_size,)
            )
            runs.append(info_flow(context, chosen, categories))
        runs.append(heatmap(context, chosen[:n_heatmaps], window_size))
        return write_report(context.store, runs, out_dir / "report.html")
