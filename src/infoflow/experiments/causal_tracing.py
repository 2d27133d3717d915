"""Causal tracing (Meng et al. 2022; Sen Sharma et al. 2024 for Mamba): the subject's embeddings noised, then the
clean value of one site (the residual stream, the mixer's update, the MLP's update) restored at one position in
a window of layers around one layer; the target's recovered probability for every (site, layer, position).

The noise is Gaussian with a standard deviation ``noise_std``: ``noise_multiplier`` (3) times the standard
deviation of the embeddings of the run's subject tokens (``causal_tracing`` computes it from the prompts, as
ROME does; where no prompts are at hand, ``prepare`` takes that of the whole vocabulary's embeddings), drawn
``samples`` times per prompt from a seed of the run's seed and the prompt's id. Each row holds the means over
the samples of the restored probability ``p`` and of the corrupted one ``p_corrupted``; their difference is
the indirect effect of the site. ``role`` names a position by its part of the prompt, so that prompts of
different lengths average as in ROME's figures.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from infoflow.experiments.experiment import Block, Experiment, FigureOptions
from infoflow.experiments.prompt_parts import role
from infoflow.experiments.runner import ChunkJob, ModelContext, Rows, RunContext, run_each, with_ids
from infoflow.experiments.sections import figure_section
from infoflow.interventions.sites import check_sites, parse_site
from infoflow.models.modes import Site
from infoflow.store.schema import key, value

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from infoflow.data.prompts import FactPrompt
    from infoflow.data.spans import TokenSpans
    from infoflow.engines.base import TargetScores
    from infoflow.experiments.patch_runs import PlannedPatch
    from infoflow.interventions.patching import Corruption
    from infoflow.models.base import CausalLM

NOISE_MULTIPLIER = 3.0  # Meng et al.: noise of 3 times the standard deviation of the embeddings
PROMPTS_PER_CHUNK = 4  # a prompt's grid is thousands of tail rows: store every few prompts
SEED_STRIDE = 1_000_003  # a prompt's noise seed: run seed * stride + prompt id


@dataclass(frozen=True)
class CausalTracingParams:
    """Which sites are restored, in windows of how many layers, with how many noise samples of what scale."""

    sites: tuple[Site, ...] = (Site.RESIDUAL, Site.MIXER, Site.MLP)
    window_size: int = 1  # ROME: 1 for the residual stream, 10 for attention and MLP updates
    samples: int = 10
    noise_multiplier: float = NOISE_MULTIPLIER
    seed: int = 0
    noise_std: float | None = None  # None: noise_multiplier x the std of the embeddings (see the module)

    def __post_init__(self) -> None:
        if not self.sites:
            raise ValueError("causal tracing needs at least one site to restore")
        object.__setattr__(self, "sites", tuple(parse_site(site) for site in self.sites))
        if self.window_size < 1:
            raise ValueError(f"window size must be >= 1, got {self.window_size}")
        if self.samples < 1:
            raise ValueError(f"causal tracing needs at least one noise sample, got {self.samples}")
        if self.noise_multiplier <= 0:
            raise ValueError(f"the noise multiplier must be > 0, got {self.noise_multiplier}")

    def check_model(self, model: CausalLM) -> None:
        """Refuse up front a window deeper than the model and the MLP of a model without one."""
        if self.window_size > model.n_layers:
            raise ValueError(f"window size {self.window_size} is larger than the model's {model.n_layers} layers")
        check_sites(model, self.sites)


def prepare(params: CausalTracingParams, model: CausalLM) -> CausalTracingParams:
    """Check the parameters; without a noise scale, that of the whole vocabulary's embeddings."""
    from infoflow.interventions.patching import embedding_std

    params.check_model(model)
    if params.noise_std is not None:
        return params
    vocabulary = range(model.lm_head.out_features)
    return replace(params, noise_std=params.noise_multiplier * embedding_std(model, vocabulary))


def manifest_params(params: CausalTracingParams) -> dict[str, Any]:
    return {
        "sites": [s.value for s in params.sites],
        "window_size": params.window_size,
        "samples": params.samples,
        "noise_multiplier": params.noise_multiplier,
        "noise_std": params.noise_std,
        "seed": params.seed,
    }


def window_around(layer: int, size: int, n_layers: int) -> tuple[int, ...]:
    """The ``size`` layers around ``layer`` (ROME: ``layer - size // 2`` up to ``layer + ceil(size / 2)``),
    clipped to the model."""
    return tuple(range(max(0, layer - size // 2), min(n_layers, layer - (-size // 2))))


def causal_tracing_plan(spans: TokenSpans, n_layers: int, params: CausalTracingParams) -> list[PlannedPatch]:
    """Every restoration of the grid for one prompt: site x layer x position."""
    from infoflow.experiments.patch_runs import PlannedPatch
    from infoflow.interventions.patching import Patch

    return [
        PlannedPatch(
            {"site": site.value, "window_size": params.window_size, "layer": layer, "position": position},
            Patch.restoration(site, window_around(layer, params.window_size, n_layers), (position,)),
        )
        for site in params.sites
        for layer in range(n_layers)
        for position in range(spans.num_tokens)
    ]


def corruption(spans: TokenSpans, prompt: FactPrompt, params: CausalTracingParams) -> Corruption:
    """The noise of one prompt: on its subject tokens, seeded by the run's seed and the prompt's id."""
    from infoflow.interventions.patching import Corruption

    assert params.noise_std is not None, "prepare the parameters first"
    seed = params.seed * SEED_STRIDE + prompt.prompt_id
    return Corruption(tuple(spans.subject), params.noise_std, params.samples, seed)


def causal_tracing_rows(
    plan: Sequence[PlannedPatch], scores: TargetScores, clean: float, tokens: Sequence[str], spans: TokenSpans
) -> Rows:
    """A row per restoration: its key, p and p_corrupted (means over the samples), their difference (the
    indirect effect), the clean p0, and the position's token and role; ``scores`` [S, 1 + K] hold the corrupted
    run first."""
    means = scores.probability.mean(dim=0).tolist()  # [1 + K]
    corrupted = means[0]
    return [
        {
            **k.key,
            "p": p,
            "p_corrupted": corrupted,
            "effect": p - corrupted,
            "p0": clean,
            "token": tokens[int(k.key["position"])],
            "role": role(spans, int(k.key["position"])),
        }
        for k, p in zip(plan, means[1:], strict=True)
    ]


def causal_tracing_job(params: CausalTracingParams, context: ModelContext) -> ChunkJob:
    """The chunk job: prompt by prompt, the restorations of all samples batched."""
    from infoflow.engines.patching import PatchRequest
    from infoflow.experiments.jobs import prompt_ids
    from infoflow.experiments.patch_runs import checked_scores, patch_engine
    from infoflow.interventions.patching import embedding_width

    engine = patch_engine(context)
    model, tokenizer = context.loaded.model, context.loaded.tokenizer
    width = embedding_width(model)

    def job(prompt: FactPrompt, spans: TokenSpans) -> Rows:
        ids = prompt_ids(spans)
        plan = causal_tracing_plan(spans, model.n_layers, params)
        noise = corruption(spans, prompt, params).noise(spans.num_tokens, width)
        clean = checked_scores(engine, prompt, PatchRequest(ids, spans.target_id, [None]))
        patches = [None, *(k.patch for k in plan)]
        scores = checked_scores(engine, prompt, PatchRequest(ids, spans.target_id, patches, noise))
        tokens = [tokenizer.decode([i]) for i in spans.input_ids]
        return with_ids(prompt, causal_tracing_rows(plan, scores, clean.probability[0, 0].item(), tokens, spans))

    return partial(run_each, job=job)


def figures(frame: pd.DataFrame, options: FigureOptions) -> Iterator[tuple[str, Figure]]:
    """Per run and window size: the grid averaged by part of the prompt, then the grids of the first
    ``options.prompts`` prompts."""
    from infoflow.plots.causal_tracing import causal_tracing_figure

    for (model, size), rows in frame.groupby(["model", "window_size"], sort=True):
        name = f"{model}-w{size}".replace("/", "-")
        yield f"{name}-mean", causal_tracing_figure(rows)
        for prompt_id in sorted(rows["prompt_id"].unique())[: options.prompts]:
            yield f"{name}-prompt{prompt_id}", causal_tracing_figure(rows, int(prompt_id))


def report(frame: pd.DataFrame, options: FigureOptions) -> list[Block]:
    return figure_section("Causal tracing", "p(target) with one site's clean value restored", figures(frame, options))


EXPERIMENT = Experiment(
    kind="causal_tracing",
    title="causal tracing",
    columns=(
        key("site", "VARCHAR"),  # residual, mixer or mlp: whose clean value is restored
        key("window_size", "INTEGER"),
        key("layer", "INTEGER"),  # the window's centre
        key("position", "INTEGER"),
        value("p", "DOUBLE", required=True),  # mean over the noise samples
        value("p_corrupted", "DOUBLE", required=True),
        value("effect", "DOUBLE", required=True),  # p - p_corrupted, the indirect effect
        value("p0", "DOUBLE"),  # the clean run's
        value("token", "VARCHAR"),
        value("role", "VARCHAR"),  # the position's part of the prompt (subject_last, last, ...)
    ),
    job=causal_tracing_job,
    manifest_params=manifest_params,
    prepare=prepare,
    chunk_size=PROMPTS_PER_CHUNK,
    report=report,
    compare=report,
    plot=figures,
)


def subject_noise_std(context: RunContext, prompts: Sequence[FactPrompt], multiplier: float) -> float:
    """``multiplier`` times the standard deviation of the embeddings of the prompts' subject tokens."""
    from infoflow.data.spans import TokenSpans, find_spans_many
    from infoflow.interventions.patching import embedding_std

    spans = [s for s in find_spans_many(context.loaded.tokenizer, prompts) if isinstance(s, TokenSpans)]
    tokens = [s.input_ids[i] for s in spans for i in s.subject]
    if not tokens:
        raise ValueError("no prompt has a subject the tokenizer finds; causal tracing needs one to corrupt")
    return multiplier * embedding_std(context.loaded.model, tokens)


def causal_tracing(
    context: RunContext, prompts: Sequence[FactPrompt], params: CausalTracingParams, chunk_size: int | None = None
) -> str:
    """The recovered probability of every restoration of the grid, per prompt, with the noise scaled to the
    prompts' subjects unless ``params`` fix it; the run id."""
    params.check_model(context.loaded.model)
    if params.noise_std is None:
        params = replace(params, noise_std=subject_noise_std(context, prompts, params.noise_multiplier))
    return EXPERIMENT.run(context, prompts, params, chunk_size)
