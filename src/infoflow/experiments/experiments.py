"""The experiments of DESIGN §1: evaluate, info-flow, heatmap and hidden-attention export."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial

import torch

from infoflow.data.prompts import FactPrompt
from infoflow.data.spans import PromptError, TokenSpans
from infoflow.engines.base import TargetScores
from infoflow.experiments.plans import (
    InfoFlowParams,
    KnockoutOptions,
    PlannedKnockout,
    heatmap_plan,
    info_flow_plan,
    relative_change,
)
from infoflow.experiments.runner import ChunkJob, ModelContext, Rows, RunContext, run_each, run_prompts, with_ids
from infoflow.interventions.layer_knockout import layer_knockouts
from infoflow.models.base import CausalLM

TOP_K = 5


def prompt_ids(spans: TokenSpans) -> torch.Tensor:
    return torch.tensor(spans.input_ids)


@torch.no_grad()
def clean_probabilities(model: CausalLM, sequences: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """Next-token probabilities [N, V] after each of N prompts, run as one right-padded batch (exact: a causal
    model never lets the padding after a prompt reach its last position)."""
    lengths = torch.tensor([len(s) for s in sequences])
    ids = torch.zeros(len(sequences), int(lengths.max()), dtype=torch.long)
    for i, sequence in enumerate(sequences):
        ids[i, : len(sequence)] = torch.tensor(sequence)
    logits = model(ids.to(device))[torch.arange(len(sequences)), lengths - 1]  # [N, V] at each last position
    return torch.softmax(logits.float(), dim=-1)


def evaluate(context: RunContext, prompts: Sequence[FactPrompt], top_k: int = TOP_K, batch_size: int = 32) -> str:
    """Clean next-token distribution per prompt: p0 (target probability), rank (1 = top), correct, top-k."""
    job = partial(evaluation_job, top_k)
    return run_prompts(context, "evaluate", {"top_k": top_k}, prompts, job, chunk_size=batch_size)


def evaluation_job(top_k: int, context: ModelContext) -> ChunkJob:
    """The chunk job of ``evaluate``: one right-padded batch per chunk."""
    tokenizer = context.loaded.tokenizer

    def chunk_job(chunk: list[tuple[FactPrompt, TokenSpans]]) -> list[Rows | PromptError]:
        probabilities = clean_probabilities(
            context.loaded.model, [s.input_ids for _, s in chunk], context.engine.device
        )
        finite = torch.isfinite(probabilities).all(dim=-1).tolist()
        return [
            evaluation_row(prompt, spans, p) if ok else non_finite_error(context, prompt, spans)
            for (prompt, spans), p, ok in zip(chunk, probabilities, finite, strict=True)
        ]

    def evaluation_row(prompt: FactPrompt, spans: TokenSpans, probabilities: torch.Tensor) -> Rows:
        p0 = probabilities[spans.target_id].item()
        rank = 1 + int((probabilities > p0).sum().item())  # strictly more probable tokens, + 1
        top = torch.topk(probabilities, top_k)
        top_tokens = [
            [i, tokenizer.decode([i]), round(p, 6)]
            for i, p in zip(top.indices.tolist(), top.values.tolist(), strict=True)
        ]
        row = {
            "p0": p0,
            "rank": rank,
            "correct": rank == 1,
            "target_token": tokenizer.decode([spans.target_id]),
            "target_token_id": spans.target_id,
            "top_tokens": json.dumps(top_tokens),
            "prompt": prompt.prompt,
            "subject": prompt.subject,
            "target": prompt.target,
        }
        return with_ids(prompt, [row])

    return chunk_job


def knockout_job(
    context: ModelContext,
    plan_of: Callable[[TokenSpans], list[PlannedKnockout]],
    rows_of: Callable[[FactPrompt, TokenSpans, list[PlannedKnockout], TargetScores], Rows],
) -> ChunkJob:
    """A chunk job scoring every prompt's planned knockouts (and its clean run first) in one engine call."""

    def job(chunk: list[tuple[FactPrompt, TokenSpans]]) -> list[Rows | PromptError]:
        plans: list[list[PlannedKnockout] | PromptError] = []
        for _, spans in chunk:
            try:
                plans.append(plan_of(spans))
            except PromptError as error:
                plans.append(error)
        requests = [
            (prompt_ids(spans), spans.target_id, [None, *(k.knockout for k in plan)])
            for (_, spans), plan in zip(chunk, plans, strict=True)
            if not isinstance(plan, PromptError)
        ]
        scores = iter(context.engine.scores_many(requests))
        return [
            plan if isinstance(plan, PromptError) else checked_rows(prompt, spans, plan, next(scores))
            for (prompt, spans), plan in zip(chunk, plans, strict=True)
        ]

    def checked_rows(
        prompt: FactPrompt, spans: TokenSpans, plan: list[PlannedKnockout], scores: TargetScores
    ) -> Rows | PromptError:
        finite = torch.isfinite(scores.probability)
        if finite.all():
            return rows_of(prompt, spans, plan, scores)
        first = int((~finite).nonzero()[0])  # 0: the clean run, k: the k-th planned knockout
        return non_finite_error(context, prompt, spans, None if first == 0 else plan[first - 1])

    return job


@torch.no_grad()
def non_finite_error(
    context: ModelContext, prompt: FactPrompt, spans: TokenSpans, planned: PlannedKnockout | None = None
) -> PromptError:
    """The error of a prompt whose output is NaN or infinite: names the prompt and the first layer whose residual
    stream is not finite (on the clean run, or under the knockout ``planned`` that produced it)."""
    ids = prompt_ids(spans).view(1, -1).to(context.engine.device)
    model = context.loaded.model
    knockout = None if planned is None else planned.knockout
    stream = model.residual_stream(ids, layer_knockouts(model, knockout, ids.shape[1]))
    bad = next((i for i, hidden in enumerate(stream) if not torch.isfinite(hidden).all()), None)
    if bad is None:
        place = "after the final norm or unembedding (the residual stream is finite)"
    else:
        place = "in the embeddings" if bad == 0 else f"first at layer {bad - 1} (the output of that layer)"
    run = "the clean run" if planned is None else f"knockout {planned.key}"
    return PromptError(f"non-finite output (NaN/inf) on prompt {prompt.prompt_id} {prompt.prompt!r} in {run}: {place}")


def info_flow(
    context: RunContext, prompts: Sequence[FactPrompt], params: InfoFlowParams, chunk_size: int | None = None
) -> str:
    """p, diff = (p - p0)/p0 * 100 and hit (target still top-1) for every knockout of the sweep."""
    model = context.loaded.model
    params.check_model(model)
    job = partial(info_flow_job, params)
    return run_prompts(context, "info_flow", info_flow_manifest_params(params), prompts, job, chunk_size=chunk_size)


def info_flow_job(params: InfoFlowParams, context: ModelContext) -> ChunkJob:
    """The chunk job of ``info_flow``."""
    model = context.loaded.model

    def rows_of(prompt: FactPrompt, spans: TokenSpans, plan: list[PlannedKnockout], scores: TargetScores) -> Rows:
        return with_ids(prompt, info_flow_rows(plan, scores))

    return knockout_job(context, lambda spans: info_flow_plan(spans, model.n_layers, params), rows_of)


def info_flow_rows(plan: Sequence[PlannedKnockout], scores: TargetScores) -> Rows:
    """A row per planned knockout: its key, p, diff = (p - p0)/p0 * 100, hit (target still top-1) and p0;
    ``scores`` hold the clean run first, then the plan's knockouts."""
    p0 = scores.probability[0].item()
    return [
        {**k.key, "p": p, "diff": relative_change(p, p0), "hit": hit, "p0": p0}
        for k, p, hit in zip(plan, scores.probability[1:].tolist(), scores.top1[1:].tolist(), strict=True)
    ]


def info_flow_manifest_params(params: InfoFlowParams) -> dict:
    return {
        "targets": [t.value for t in params.targets],
        "sources": [s.value for s in params.sources],
        "feature_categories": [c.value for c in params.feature_categories],
        "window_sizes": list(params.window_sizes),
        **knockout_manifest_params(params.options),
    }


def knockout_manifest_params(options: KnockoutOptions) -> dict:
    return {**asdict(options), "mode": options.mode.value}


def heatmap(
    context: RunContext,
    prompts: Sequence[FactPrompt],
    window_size: int,
    options: KnockoutOptions | None = None,
    chunk_size: int | None = None,
) -> str:
    """p of the target when last <- position i is knocked out, for every position i and window start."""
    model = context.loaded.model
    options = options or KnockoutOptions()
    InfoFlowParams(window_sizes=(window_size,), options=options).check_model(model)
    params = {"window_size": window_size, **knockout_manifest_params(options)}
    job = partial(heatmap_job, window_size, options)
    return run_prompts(context, "heatmap", params, prompts, job, chunk_size=chunk_size)


def heatmap_job(window_size: int, options: KnockoutOptions, context: ModelContext) -> ChunkJob:
    """The chunk job of ``heatmap``."""
    model = context.loaded.model
    tokenizer = context.loaded.tokenizer

    def rows_of(prompt: FactPrompt, spans: TokenSpans, plan: list[PlannedKnockout], scores: TargetScores) -> Rows:
        return with_ids(prompt, heatmap_rows(plan, scores, [tokenizer.decode([i]) for i in spans.input_ids]))

    return knockout_job(context, lambda spans: heatmap_plan(spans, model.n_layers, window_size, options), rows_of)


def heatmap_rows(plan: Sequence[PlannedKnockout], scores: TargetScores, tokens: Sequence[str]) -> Rows:
    """A row per planned knockout: its key, p, the knocked-out position's token and p0; ``scores`` hold the
    clean run first, then the plan's knockouts."""
    p0 = scores.probability[0].item()
    return [
        {**k.key, "p": p, "token": tokens[int(k.key["position"])], "p0": p0}
        for k, p in zip(plan, scores.probability[1:].tolist(), strict=True)
    ]


def check_layers(model: CausalLM, layers: Sequence[int] | None) -> list[int]:
    """``layers`` (default: every layer) if each exists in ``model``; else a ``ValueError``."""
    chosen = list(range(model.n_layers)) if layers is None else list(layers)
    bad = [layer for layer in chosen if not 0 <= layer < model.n_layers]
    if bad:
        raise ValueError(f"layers {bad} do not exist in a model with {model.n_layers} layers (0..{model.n_layers - 1})")
    return chosen


def attention(
    context: RunContext, prompts: Sequence[FactPrompt], layers: Sequence[int] | None = None, per_feature: bool = False
) -> str:
    """Hidden-attention matrices [target][source] per layer: the mean over features (channels / heads), and
    every feature's own matrix with ``per_feature``."""
    chosen = check_layers(context.loaded.model, layers)
    job = partial(attention_job, chosen, per_feature)
    return run_prompts(context, "attention", {"layers": chosen, "per_feature": per_feature}, prompts, job)


def attention_job(chosen: list[int], per_feature: bool, context: ModelContext) -> ChunkJob:
    """The chunk job of ``attention``: prompt by prompt."""
    model = context.loaded.model
    tokenizer = context.loaded.tokenizer

    def job(prompt: FactPrompt, spans: TokenSpans) -> Rows:
        tokens = [tokenizer.decode([i]) for i in spans.input_ids]
        with torch.no_grad():
            stream = model.residual_stream(prompt_ids(spans).view(1, -1).to(context.engine.device))
        if not all(torch.isfinite(hidden).all() for hidden in stream):
            raise non_finite_error(context, prompt, spans)
        rows = []
        for layer in chosen:
            prepared = model.block(layer).mixer_inputs(stream[layer])
            matrices = model.mixer(layer).terms(prepared).matrix[0].float().cpu()  # [F, T, T]
            rows.append({"layer": layer, "feature": "mean", "matrix": matrices.mean(0).tolist(), "tokens": tokens})
            if per_feature:
                rows += [
                    {"layer": layer, "feature": str(f), "matrix": m.tolist(), "tokens": tokens}
                    for f, m in enumerate(matrices)
                ]
        return with_ids(prompt, rows)

    return partial(run_each, job=job)
