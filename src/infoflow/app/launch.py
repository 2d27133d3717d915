"""Launch page logic: start (or resume) an info-flow or heatmap run into the store, with progress.

The experiments are resumable (a run's id is its manifest), so the run proceeds in steps over growing
prefixes of the chosen prompts: each step only computes the new prompts and reports progress.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from infoflow.data.prompts import FactPrompt
from infoflow.data.spans import TokenType
from infoflow.experiments.heatmap import heatmap
from infoflow.experiments.info_flow import InfoFlowParams, info_flow
from infoflow.experiments.plans import KnockoutOptions
from infoflow.experiments.request import RunRequest, open_run
from infoflow.experiments.runner import RunContext
from infoflow.interventions.knockout import FeatureCategory, KnockoutMode, default_window_size
from infoflow.interventions.mixers import Mixers
from infoflow.models.base import CausalLM
from infoflow.models.load import LoadedModel
from infoflow.store import ResultsStore

KINDS = ("info_flow", "heatmap")
Progress = Callable[[int, int], None]  # prompts done, prompts in the run


def no_progress(done: int, total: int) -> None:
    """The default progress callback: ignore."""


@dataclass(frozen=True)
class LaunchRequest:
    kind: str = "info_flow"
    dataset: str = "synthetic"
    dataset_file: Path | None = None
    prompt_filter: str = "all"
    limit: int | None = 10
    seed: int = 0
    window_size: int | None = None
    sources: tuple[TokenType, ...] = InfoFlowParams().sources
    feature_categories: tuple[FeatureCategory, ...] = (FeatureCategory.ALL,)
    mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION
    strict: bool = False
    mixers: Mixers = field(default_factory=Mixers)  # hybrids: the knockout through attention or the recurrence only
    step: int = 4  # prompts per progress step
    extra: dict[str, str] = field(default_factory=dict, hash=False)


def launch(loaded: LoadedModel, store: ResultsStore, request: LaunchRequest, progress: Progress = no_progress) -> str:
    """Run the request into ``store`` (resuming a matching run); returns the run id. Options the model cannot
    run (mixers it lacks, windows deeper than it) are refused before the prompts are chosen."""
    if request.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {request.kind!r}")
    sweep(request, loaded.model).check_model(loaded.model)
    run_request = RunRequest(
        model=loaded.name,
        dataset=request.dataset,
        dataset_file=request.dataset_file,
        filter=request.prompt_filter,
        limit=request.limit,
        seed=request.seed,
        show_progress=False,
    )
    with open_run(run_request, loaded=loaded, store=store) as run:
        return run_in_steps(*run.choose(), request, progress)


def run_in_steps(context: RunContext, chosen: list[FactPrompt], request: LaunchRequest, progress: Progress) -> str:
    """The request's experiment on growing prefixes of ``chosen`` (each step resumes the run of the one before);
    returns the run id."""
    params = sweep(request, context.loaded.model)
    (size,), options = params.window_sizes, params.options
    run_id = ""
    progress(0, len(chosen))
    for stop in [*range(request.step, len(chosen), request.step), len(chosen)]:
        if request.kind == "info_flow":
            run_id = info_flow(context, chosen[:stop], params)
        else:
            run_id = heatmap(context, chosen[:stop], size, options)
        progress(stop, len(chosen))
    return run_id


def sweep(request: LaunchRequest, model: CausalLM) -> InfoFlowParams:
    """The request's sweep on ``model`` (a heatmap takes its window size and knockout options)."""
    return InfoFlowParams(
        sources=tuple(request.sources),
        feature_categories=tuple(request.feature_categories),
        window_sizes=(request.window_size or default_window_size(model.n_layers),),
        options=KnockoutOptions(mode=request.mode, strict=request.strict, mixers=request.mixers),
    )
