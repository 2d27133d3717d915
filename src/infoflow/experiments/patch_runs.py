"""What the patch experiments (sublayer knockout, causal tracing) share: planned patches with their store keys,
the patch engine of a run, and a prompt's scores with non-finite outputs turned into the prompt's error."""

from __future__ import annotations

from dataclasses import dataclass

from infoflow.data.prompts import FactPrompt
from infoflow.data.spans import PromptError
from infoflow.engines.base import TargetScores
from infoflow.engines.patching import PatchEngine, PatchRequest, make_patch_engine
from infoflow.experiments.runner import ModelContext
from infoflow.interventions.patching import Patch


@dataclass(frozen=True)
class PlannedPatch:
    key: dict[str, str | int]  # the store's key columns (without run and prompt ids)
    patch: Patch


def patch_engine(context: ModelContext) -> PatchEngine:
    """The patch engine of the run's engine kind (fast or reference), with its batch size."""
    return make_patch_engine(context.engine.name, context.loaded.model, getattr(context.engine, "max_batch", None))


def checked_scores(engine: PatchEngine, prompt: FactPrompt, request: PatchRequest) -> TargetScores:
    """The request's scores [S, K]; a ``PromptError`` naming the prompt when an output is NaN or infinite."""
    scores = engine.scores(request)
    if not scores.probability.isfinite().all():
        raise PromptError(f"non-finite output (NaN/inf) on prompt {prompt.prompt_id} {prompt.prompt!r}")
    return scores
