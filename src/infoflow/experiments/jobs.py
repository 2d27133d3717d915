"""What the experiments' chunk jobs share: a prompt's ids, the chunk job that scores planned knockouts, and the
error that names where a prompt's output stops being finite."""

from __future__ import annotations

from collections.abc import Callable

import torch

from infoflow.data.prompts import FactPrompt
from infoflow.data.spans import PromptError, TokenSpans
from infoflow.engines.base import TargetScores
from infoflow.engines.memory import knockouts_need
from infoflow.experiments.plans import PlannedKnockout
from infoflow.experiments.runner import Chunk, ChunkJob, ModelContext, Rows, SizedJob
from infoflow.interventions.layer_knockout import layer_knockouts


def prompt_ids(spans: TokenSpans) -> torch.Tensor:
    return torch.tensor(spans.input_ids)


def knockout_job(
    context: ModelContext,
    plan_of: Callable[[TokenSpans], list[PlannedKnockout]],
    rows_of: Callable[[FactPrompt, TokenSpans, list[PlannedKnockout], TargetScores], Rows],
) -> ChunkJob:
    """A chunk job scoring every prompt's planned knockouts (and its clean run first) in one engine call. A chunk's
    plans are made once, for its memory prediction and its run (``needs``, then the job, on the same chunk)."""
    planned: list[tuple[Chunk, list[list[PlannedKnockout] | PromptError]]] = []  # the last chunk planned

    def plans_of(chunk: Chunk) -> list[list[PlannedKnockout] | PromptError]:
        if planned and [id(item) for item in planned[0][0]] == [id(item) for item in chunk]:
            return planned[0][1]  # the chunk planned last (held there, so its items' ids are still theirs)
        plans: list[list[PlannedKnockout] | PromptError] = []
        for _, spans in chunk:
            try:
                plans.append(plan_of(spans))
            except PromptError as error:
                plans.append(error)
        planned[:] = [(list(chunk), plans)]
        return plans

    def job(chunk: Chunk) -> list[Rows | PromptError]:
        plans = plans_of(chunk)
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

    def needs(chunk: Chunk) -> int:
        requests = [
            (spans.num_tokens, [k.knockout for k in plan])
            for (_, spans), plan in zip(chunk, plans_of(chunk), strict=True)
            if not isinstance(plan, PromptError)  # costs nothing
        ]
        return knockouts_need(context.engine, requests) if requests else 0

    def checked_rows(
        prompt: FactPrompt, spans: TokenSpans, plan: list[PlannedKnockout], scores: TargetScores
    ) -> Rows | PromptError:
        finite = torch.isfinite(scores.probability)
        if finite.all():
            return rows_of(prompt, spans, plan, scores)
        first = int((~finite).nonzero()[0])  # 0: the clean run, k: the k-th planned knockout
        return non_finite_error(context, prompt, spans, None if first == 0 else plan[first - 1])

    return SizedJob(job, needs, context.engine.device)


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
