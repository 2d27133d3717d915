"""Subject -> last knockout vs a random control, on prompts a model answers correctly."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from infoflow.data import FactPrompt, find_spans
from infoflow.engines.fast import FastEngine
from infoflow.interventions.knockout import Knockout
from infoflow.models import LoadedModel


@dataclass(frozen=True)
class KnockoutEffects:
    layers: Sequence[int]
    n_prompts: int
    p0: float  # mean clean probability of the target
    subject_drop: float  # 1 - mean p(subject -> last blocked in ``layers``) / mean p0
    control_drop: float  # the same with as many random non-subject positions (not first, not last)


def subject_vs_random_control(
    loaded: LoadedModel,
    prompts: Sequence[FactPrompt],
    n_prompts: int,
    layer_sets: Sequence[Sequence[int]] | None = None,
    seed: int = 0,
) -> list[KnockoutEffects]:
    """Mean drops per set of knocked layers (default: every layer) over the first ``n_prompts`` of ``prompts``
    whose target is the model's top-1 token.

    The control blocks ``last <- r`` for ``len(subject)`` positions ``r`` drawn among the tokens that are
    neither subject nor last nor the first (BOS where the tokenizer adds one), in the same layers.
    """
    model = loaded.model
    layer_sets = layer_sets or [range(model.n_layers)]
    engine = FastEngine(model)
    rng = random.Random(seed)
    p0s: list[float] = []
    knocked: list[list[float]] = []  # per prompt: subject, control for each layer set
    for prompt in prompts:
        spans = find_spans(loaded.tokenizer, prompt)
        input_ids = torch.tensor(spans.input_ids)
        with torch.no_grad():
            logits = model(input_ids[None])[0, -1]
        if logits.argmax().item() != spans.target_id:
            continue
        last = spans.num_tokens - 1
        subject = spans.positions("subject")
        others = [i for i in range(1, last) if i not in subject]
        control = rng.sample(others, min(len(subject), len(others)))
        knockouts = [Knockout.between([last], pos, layers) for layers in layer_sets for pos in (subject, control)]
        p0, *rest = engine.scores(input_ids, spans.target_id, [None, *knockouts]).probability.tolist()
        p0s.append(p0)
        knocked.append(rest)
        if len(p0s) == n_prompts:
            break
    total_p0 = sum(p0s)
    drops = [1 - sum(column) / total_p0 for column in zip(*knocked, strict=True)]
    return [
        KnockoutEffects(layers, len(p0s), total_p0 / len(p0s), drops[2 * i], drops[2 * i + 1])
        for i, layers in enumerate(layer_sets)
    ]
