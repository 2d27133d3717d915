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

With ``corruption="counterfactual"`` the subject is not noised but swapped (symmetric token replacement, Zhang
& Nanda 2024): its tokens are replaced by the subject tokens of another prompt of the run, one with as many
subject tokens, another subject and another target, drawn from a seed of the run's seed and the prompt's id
(``counterfactual_donors``); one corrupted run per prompt, so ``samples`` is 1.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from infoflow.data.spans import PromptError, TokenSpans
from infoflow.experiments.experiment import Block, Experiment, FigureOptions
from infoflow.experiments.prompt_parts import role
from infoflow.experiments.runner import ChunkJob, ModelContext, Rows, RunContext, run_each, with_ids
from infoflow.experiments.sections import figure_section
from infoflow.interventions.sites import check_sites, parse_site
from infoflow.models.modes import Site
from infoflow.store.schema import key, value

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from matplotlib.figure import Figure

    from infoflow.data.prompts import FactPrompt
    from infoflow.engines.base import TargetScores
    from infoflow.experiments.patch_runs import PlannedPatch
    from infoflow.interventions.patching import Corruption
    from infoflow.models.base import CausalLM

NOISE_MULTIPLIER = 3.0  # Meng et al.: noise of 3 times the standard deviation of the embeddings
PROMPTS_PER_CHUNK = 4  # a prompt's grid is thousands of tail rows: store every few prompts
SEED_STRIDE = 1_000_003  # a prompt's noise seed: run seed * stride + prompt id
CORRUPTIONS = ("noise", "counterfactual")  # Gaussian noise on the subject's embeddings; another subject


@dataclass(frozen=True)
class CausalTracingParams:
    """Which sites are restored, in windows of how many layers, with how many noise samples of what scale."""

    sites: tuple[Site, ...] = (Site.RESIDUAL, Site.MIXER, Site.MLP)
    window_size: int = 1  # ROME: 1 for the residual stream, 10 for attention and MLP updates
    samples: int = 10
    noise_multiplier: float = NOISE_MULTIPLIER
    seed: int = 0
    noise_std: float | None = None  # None: noise_multiplier x the std of the embeddings (see the module)
    corruption: str = "noise"  # or "counterfactual" (see the module)
    # counterfactual: (prompt id, the donor's subject token ids) per prompt; ``causal_tracing`` draws them
    donors: tuple[tuple[int, tuple[int, ...]], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if self.corruption not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {self.corruption!r}; choose {' or '.join(CORRUPTIONS)}")
        if self.corruption == "counterfactual":
            object.__setattr__(self, "samples", 1)  # one swapped subject: one corrupted run
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
    if params.noise_std is not None or params.corruption == "counterfactual":
        return params
    vocabulary = range(model.lm_head.out_features)
    return replace(params, noise_std=params.noise_multiplier * embedding_std(model, vocabulary))


def manifest_params(params: CausalTracingParams) -> dict[str, Any]:
    """The run's identity; the donors follow from the prompts and the seed, so they are not recorded."""
    common = {"sites": [s.value for s in params.sites], "window_size": params.window_size, "seed": params.seed}
    if params.corruption == "counterfactual":
        return {**common, "corruption": "counterfactual", "samples": 1}
    noise = {"samples": params.samples, "noise_multiplier": params.noise_multiplier, "noise_std": params.noise_std}
    return {**common, **noise}


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


def counterfactual_donors(
    prompts: Sequence[FactPrompt], spans: Sequence[TokenSpans], seed: int
) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """Per prompt with a donor: (prompt id, the subject token ids of another of ``prompts`` whose subject has as
    many tokens, another text and another target, as that prompt tokenizes them), drawn from a seed of ``seed``
    and the prompt's id."""
    subjects = [tuple(s.input_ids[i] for i in s.subject) for s in spans]
    donors = []
    for prompt, subject in zip(prompts, subjects, strict=True):
        candidates = sorted(
            {
                other
                for other_prompt, other in zip(prompts, subjects, strict=True)
                if len(other) == len(subject)
                and other_prompt.subject.strip() != prompt.subject.strip()
                and other_prompt.target != prompt.target
            }
        )
        if candidates:
            donors.append((prompt.prompt_id, random.Random(seed * SEED_STRIDE + prompt.prompt_id).choice(candidates)))
    return tuple(donors)


def corrupted_offsets(
    model: CausalLM, ids: torch.Tensor, spans: TokenSpans, prompt: FactPrompt, params: CausalTracingParams
) -> torch.Tensor:
    """[S, T, D]: what the corruption adds to the prompt's embeddings (noise samples, or one subject swap)."""
    from infoflow.interventions.patching import SubjectSwap, embedding_width

    if params.corruption == "noise":
        return corruption(spans, prompt, params).noise(spans.num_tokens, embedding_width(model))
    donor = dict(params.donors).get(prompt.prompt_id)
    if donor is None:
        raise PromptError(
            f"no other prompt of the run has a subject of {len(spans.subject)} tokens and another target to swap in "
            f"for prompt {prompt.prompt_id}; run more prompts or use --corruption noise"
        )
    return SubjectSwap(tuple(spans.subject), donor).offset(model, ids)


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

    engine = patch_engine(context)
    model, tokenizer = context.loaded.model, context.loaded.tokenizer

    def job(prompt: FactPrompt, spans: TokenSpans) -> Rows:
        ids = prompt_ids(spans)
        plan = causal_tracing_plan(spans, model.n_layers, params)
        noise = corrupted_offsets(model, ids, spans, prompt, params)
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


def usable_spans(context: RunContext, prompts: Sequence[FactPrompt]) -> tuple[list[FactPrompt], list[TokenSpans]]:
    """The prompts whose subject the tokenizer finds, with their spans; a ``ValueError`` when none has one."""
    from infoflow.data.spans import find_spans_many

    found = find_spans_many(context.loaded.tokenizer, prompts)
    pairs = [(p, s) for p, s in zip(prompts, found, strict=True) if isinstance(s, TokenSpans)]
    if not pairs:
        raise ValueError("no prompt has a subject the tokenizer finds; causal tracing needs one to corrupt")
    return [p for p, _ in pairs], [s for _, s in pairs]


def subject_noise_std(context: RunContext, prompts: Sequence[FactPrompt], multiplier: float) -> float:
    """``multiplier`` times the standard deviation of the embeddings of the prompts' subject tokens."""
    from infoflow.interventions.patching import embedding_std

    _, spans = usable_spans(context, prompts)
    return multiplier * embedding_std(context.loaded.model, [s.input_ids[i] for s in spans for i in s.subject])


def causal_tracing(
    context: RunContext, prompts: Sequence[FactPrompt], params: CausalTracingParams, chunk_size: int | None = None
) -> str:
    """The recovered probability of every restoration of the grid, per prompt, with the noise scaled to the
    prompts' subjects unless ``params`` fix it, or each subject swapped for a donor among ``prompts``; the run id."""
    params.check_model(context.loaded.model)
    if params.corruption == "counterfactual":
        params = replace(params, donors=counterfactual_donors(*usable_spans(context, prompts), params.seed))
    elif params.noise_std is None:
        params = replace(params, noise_std=subject_noise_std(context, prompts, params.noise_multiplier))
    return EXPERIMENT.run(context, prompts, params, chunk_size)
