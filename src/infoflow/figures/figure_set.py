"""The papers' figure set for a list of models: run what the results store lacks, then draw every figure.

Figures (PNG + PDF, each stating its prompt filter), after research/reference-spec.md §8:
  info-flow            last <- subject / relation / last / first, models as lines (paper figs 1, 3-5), and one
                       figure per family when several families are drawn
  feature-categories   per Mamba model: all / context-dependent / context-independent features (fig 6); in a
                       hybrid the categories rank the recurrent layers' features, its attention layers are
                       knocked out whole
  mixers               per hybrid model: through attention / through the recurrence / all layers
  window-sizes         per model: window sizes 1, 3, 5, 9, 12, 15 that fit its depth (figs 8-10)
  prompt-order         subject-first vs relation-first prompts, models as lines
  heatmaps             per chosen prompt: models as rows; the first prompt also at every window size
  first-position-bias  table: first -> last knockout against the other sources, per model
  recall               per model: causal tracing (mean grid over the heatmap prompts, few noise samples) and
                       vocabulary projection; sublayer knockout at the last token, models as panels
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from infoflow.data import FactPrompt
from infoflow.experiments.causal_tracing import CausalTracingParams, causal_tracing
from infoflow.experiments.evaluate import evaluate
from infoflow.experiments.heatmap import heatmap
from infoflow.experiments.info_flow import InfoFlowParams, info_flow
from infoflow.experiments.plans import KnockoutOptions
from infoflow.experiments.request import Precision, RunRequest, load_prompts_of, open_run
from infoflow.experiments.runner import RunContext
from infoflow.experiments.sublayer_knockout import SUBLAYERS, SublayerKnockoutParams, sublayer_knockout
from infoflow.experiments.vocab_projection import VocabProjectionParams, vocab_projection
from infoflow.interventions.knockout import FeatureCategory, default_window_size
from infoflow.interventions.mixers import MixerGroup, Mixers, is_hybrid
from infoflow.interventions.sites import model_sites
from infoflow.models.registry import shipped_builtins
from infoflow.naming import short_model_name
from infoflow.store import ResultsStore

PAPER_WINDOW_SIZES = (1, 3, 5, 9, 12, 15)
# the default set: every built-in model this installation has (the hybrids once their weights are trained)
BUILTIN_MODELS = shipped_builtins()
SPLIT = (MixerGroup.ATTENTION, MixerGroup.RECURRENT)  # a hybrid's flow, next to that of all layers


@dataclass(frozen=True)
class FigureSetOptions:
    dataset: str = "synthetic"
    dataset_file: Path | None = None
    prompt_filter: str | None = None  # default: every model of the set answers correctly
    n_prompts: int | None = 100  # a seeded sample of the filtered prompts
    candidates: int | None = 1000  # evaluate (and filter) a seeded sample of this many prompts; None: all
    n_heatmaps: int = 3
    recall: bool = True  # causal tracing (on the heatmap prompts), sublayer knockout, vocabulary projection
    tracing_samples: int = 3  # noise samples per prompt of causal tracing (ROME: 10; few keep the set quick)
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int | None = None  # tail rows per pass; None: the fast engine sizes it
    threads: int | None = None  # CPU threads of torch; None: leave them as they are
    show_progress: bool = True

    def filter_expression(self, models: Sequence[str]) -> str:
        return self.prompt_filter or f"all-correct({', '.join(models)})"

    def request(self, model: str, models: Sequence[str]) -> RunRequest:
        """The run request of ``model``, one of the set ``models``."""
        return RunRequest(
            model=model,
            dataset=self.dataset,
            dataset_file=self.dataset_file,
            filter=self.filter_expression(models),
            limit=self.n_prompts,
            seed=self.seed,
            candidates=self.candidates,
            device=self.device,
            dtype=Precision(self.dtype),
            batch_size=self.batch_size,
            threads=self.threads,
            show_progress=self.show_progress,
        )


@dataclass
class ModelRuns:
    """The runs of one model that the figures read."""

    name: str  # as the figures label it (short_model_name)
    family: str
    is_ssm: bool
    n_layers: int
    info_flow: str = ""
    heatmaps: dict[int, str] = field(default_factory=dict)  # window size -> heatmap run id
    is_hybrid: bool = False
    mixer_runs: dict[str, str] = field(default_factory=dict)  # hybrids: mixers (attention, recurrent) -> run id
    recall_runs: dict[str, str] = field(default_factory=dict)  # experiment kind -> run id (FigureSetOptions.recall)


@dataclass(frozen=True)
class StudyRuns:
    models: list[ModelRuns]
    prompts: list[FactPrompt]  # the chosen prompts, the same for every model
    window_size: int  # of the cross-model figures: the default for the shallowest model
    heatmap_prompts: list[FactPrompt]


def window_sizes_for(n_layers: int) -> tuple[int, ...]:
    """The paper's window sizes that fit ``n_layers``, plus the model's default window size."""
    return tuple(sorted({size for size in PAPER_WINDOW_SIZES if size <= n_layers} | {default_window_size(n_layers)}))


def run_study(
    models: Sequence[str],
    store: ResultsStore,
    options: FigureSetOptions,
    progress: Callable[[str], None] = print,
) -> StudyRuns:
    """Evaluate every model, choose the prompts once, and run each model's sweeps (resuming what exists)."""
    if not models:
        raise ValueError("give at least one model")
    requests = [options.request(name, models) for name in models]  # every name is checked before any work
    prompts = load_prompts_of(requests[0])
    depths = []
    for request in requests:  # every model's evaluate results first: the default filter reads all of them
        progress(f"evaluate {request.model} on {len(prompts)} prompts of {options.dataset}")
        with open_run(request, store=store, prompts=prompts) as run:
            evaluate(replace(run.context, dataset_filter="all"), prompts)
            depths.append(run.loaded.model.n_layers)
    _, chosen = run.choose()  # with the last model's run (still valid: the store is ours); the filter reads the store
    window_size = default_window_size(min(depths))
    heatmap_prompts = chosen[: options.n_heatmaps]
    runs: list[ModelRuns] = []
    for request in requests:
        with open_run(request, store=store, prompts=prompts) as run:
            model = run.loaded.model
            name = short_model_name(run.loaded.name)  # the figures' label of the model (a folder: its name)
            entry = ModelRuns(name, model.family, model.has_decay_features, model.n_layers, is_hybrid=is_hybrid(model))
            categories = tuple(FeatureCategory) if model.has_decay_features else (FeatureCategory.ALL,)
            sweep = InfoFlowParams(feature_categories=categories, window_sizes=window_sizes_for(model.n_layers))
            sizes = list(sweep.window_sizes)
            progress(f"info-flow and heatmaps {request.model}: {len(chosen)} prompts, window sizes {sizes}")
            entry.info_flow = info_flow(run.context, chosen, sweep)
            if entry.is_hybrid:  # the same knockouts through attention only and through the recurrence only
                progress(f"info-flow {request.model} through attention and through the recurrence")
                for group in SPLIT:
                    split = InfoFlowParams(window_sizes=(window_size,), options=KnockoutOptions(mixers=Mixers(group)))
                    entry.mixer_runs[group.value] = info_flow(run.context, chosen, split)
            entry.heatmaps[window_size] = heatmap(run.context, heatmap_prompts, window_size)
            for size in sweep.window_sizes:  # the first prompt at every window size
                if size != window_size:
                    entry.heatmaps[size] = heatmap(run.context, heatmap_prompts[:1], size)
            if options.recall:
                progress(f"recall methods {request.model}: causal tracing on the heatmap prompts")
                entry.recall_runs = run_recall(run.context, chosen, heatmap_prompts, window_size, options)
        runs.append(entry)
    return StudyRuns(runs, chosen, window_size, heatmap_prompts)


def run_recall(
    context: RunContext,
    prompts: Sequence[FactPrompt],
    tracing_prompts: Sequence[FactPrompt],
    window_size: int,
    options: FigureSetOptions,
) -> dict[str, str]:
    """The recall methods' runs of one model: sublayer knockout at the last token and vocabulary projection on
    ``prompts``, causal tracing of every site the model has on ``tracing_prompts``; kind -> run id."""
    model = context.loaded.model
    sites = model_sites(model)
    knockout = SublayerKnockoutParams(sites=tuple(s for s in sites if s in SUBLAYERS), window_sizes=(window_size,))
    tracing = CausalTracingParams(sites=sites, samples=options.tracing_samples, seed=options.seed)
    return {
        "sublayer_knockout": sublayer_knockout(context, prompts, knockout),
        "vocab_projection": vocab_projection(context, prompts, VocabProjectionParams(sites=sites)),
        "causal_tracing": causal_tracing(context, tracing_prompts, tracing),
    }
