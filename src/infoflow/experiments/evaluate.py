"""The evaluate experiment: each prompt's clean next-token distribution, p0 (the target's probability), its rank
(1 = top), whether it is top-1, and the top-k tokens. Prompt filters (``correct``, ``rank``) read its rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infoflow.experiments.experiment import Block, Experiment, FigureOptions, Heading, TableBlock
from infoflow.experiments.runner import ChunkJob, ModelContext, Rows, RunContext, SizedJob, with_ids
from infoflow.store.schema import value

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from infoflow.data.prompts import FactPrompt
    from infoflow.data.spans import PromptError, TokenSpans
    from infoflow.models.base import CausalLM

TOP_K = 5
BATCH_SIZE = 32  # prompts per chunk: one right-padded batch each


@dataclass(frozen=True)
class EvaluateParams:
    top_k: int = TOP_K


def manifest_params(params: EvaluateParams) -> dict[str, Any]:
    return {"top_k": params.top_k}


def clean_probabilities(model: CausalLM, sequences: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """Next-token probabilities [N, V] after each of N prompts, run as one right-padded batch (exact: a causal
    model never lets the padding after a prompt reach its last position)."""
    import torch

    lengths = torch.tensor([len(s) for s in sequences])
    ids = torch.zeros(len(sequences), int(lengths.max()), dtype=torch.long)
    for i, sequence in enumerate(sequences):
        ids[i, : len(sequence)] = torch.tensor(sequence)
    with torch.no_grad():
        logits = model(ids.to(device))[torch.arange(len(sequences)), lengths - 1]  # [N, V] at each last position
    return torch.softmax(logits.float(), dim=-1)


def evaluation_job(params: EvaluateParams, context: ModelContext) -> ChunkJob:
    """The chunk job of ``evaluate``: one right-padded batch per chunk."""
    import torch

    from infoflow.engines.memory import MemoryModel, memory_model
    from infoflow.experiments.jobs import non_finite_error

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

    def needs(chunk: list[tuple[FactPrompt, TokenSpans]]) -> int:  # one right-padded batch, logits everywhere
        longest = max(spans.num_tokens for _, spans in chunk)
        return MemoryModel.total(memory_model(context.loaded.model).clean_bytes(len(chunk), longest, True))

    def evaluation_row(prompt: FactPrompt, spans: TokenSpans, probabilities: torch.Tensor) -> Rows:
        p0 = probabilities[spans.target_id].item()
        rank = 1 + int((probabilities > p0).sum().item())  # strictly more probable tokens, + 1
        top = torch.topk(probabilities, params.top_k)
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

    return SizedJob(chunk_job, needs, context.engine.device)


def report(frame: pd.DataFrame, options: FigureOptions) -> list[Block]:
    from infoflow.plots.summary import evaluate_summary

    return [Heading("Clean predictions"), TableBlock(evaluate_summary(frame))]


EXPERIMENT = Experiment(
    kind="evaluate",
    title="evaluate",
    columns=(
        value("p0", "DOUBLE", required=True),
        value("rank", "INTEGER", required=True),
        value("correct", "BOOLEAN", required=True),
        value("target_token", "VARCHAR"),
        value("target_token_id", "INTEGER"),
        value("top_tokens", "JSON"),
        value("prompt", "VARCHAR"),
        value("subject", "VARCHAR"),
        value("target", "VARCHAR"),
    ),
    job=evaluation_job,
    manifest_params=manifest_params,
    chunk_size=BATCH_SIZE,
    report=report,
)


def evaluate(
    context: RunContext, prompts: Sequence[FactPrompt], top_k: int = TOP_K, batch_size: int = BATCH_SIZE
) -> str:
    """Clean next-token distribution per prompt: p0 (target probability), rank (1 = top), correct, top-k."""
    return EXPERIMENT.run(context, prompts, EvaluateParams(top_k), chunk_size=batch_size)
