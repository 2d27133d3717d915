"""Launch page logic: start (or resume) an info-flow or heatmap run into the store, with progress.

The experiments are resumable (a run's id is its manifest), so the run proceeds in steps over growing
prefixes of the chosen prompts: each step only computes the new prompts and reports progress.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from infoflow.data import load_dataset
from infoflow.data.spans import TokenType
from infoflow.engines.fast import FastEngine
from infoflow.experiments.experiments import heatmap, info_flow
from infoflow.experiments.filters import describe_selection
from infoflow.experiments.plans import InfoFlowParams, KnockoutOptions
from infoflow.experiments.runner import RunContext
from infoflow.experiments.selection import choose_prompts
from infoflow.interventions.knockout import FeatureCategory, KnockoutMode, default_window_size
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
    step: int = 4  # prompts per progress step
    extra: dict[str, str] = field(default_factory=dict, hash=False)


def launch(loaded: LoadedModel, store: ResultsStore, request: LaunchRequest, progress: Progress = no_progress) -> str:
    """Run the request into ``store`` (resuming a matching run); returns the run id."""
    if request.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {request.kind!r}")
    if request.limit is not None and request.limit < 1:
        raise ValueError("the prompt limit must be at least 1")
    prompts = load_dataset(request.dataset, path=request.dataset_file)
    selection = describe_selection(request.prompt_filter, request.limit, request.seed)
    context = RunContext(loaded, FastEngine(loaded.model), store, request.dataset, selection, show_progress=False)
    chosen = choose_prompts(context, prompts, request.prompt_filter, request.limit, request.seed)
    if not chosen:
        raise ValueError(f"the filter {request.prompt_filter!r} selects no prompt of {request.dataset}")
    size = request.window_size or default_window_size(loaded.model.n_layers)
    options = KnockoutOptions(mode=request.mode, strict=request.strict)
    params = InfoFlowParams(
        sources=tuple(request.sources),
        feature_categories=tuple(request.feature_categories),
        window_sizes=(size,),
        options=options,
    )
    run_id = ""
    progress(0, len(chosen))
    for stop in [*range(request.step, len(chosen), request.step), len(chosen)]:
        if request.kind == "info_flow":
            run_id = info_flow(context, chosen[:stop], params)
        else:
            run_id = heatmap(context, chosen[:stop], size, options)
        progress(stop, len(chosen))
    return run_id
