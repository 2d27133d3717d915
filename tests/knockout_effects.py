"""Subject -> last knockout in every layer vs a random control, on prompts a model answers correctly."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from infoflow.data import FactPrompt, find_spans
from infoflow.knockout.fast import FastEngine
from infoflow.knockout.spec import Knockout
from infoflow.models import LoadedModel


@dataclass(frozen=True)
class KnockoutEffects:
    n_prompts: int
    p0: float  # mean clean probability of the target
    subject_drop: float  # 1 - mean p(subject -> last blocked) / mean p0
    control_drop: float  # the same with as many random non-subject positions (not first, not last)


def subject_vs_random_control(
    loaded: LoadedModel, prompts: Sequence[FactPrompt], n_prompts: int, seed: int = 0
) -> KnockoutEffects:
    """Mean drops over the first ``n_prompts`` of ``prompts`` whose target is the model's top-1 token.

    The control blocks ``last <- r`` for ``len(subject)`` positions ``r`` drawn among the tokens that are
    neither subject nor last nor the first (BOS, which carries no word of the prompt), in every layer.
    """
    model = loaded.model
    engine = FastEngine(model)
    rng = random.Random(seed)
    every_layer = range(model.n_layers)
    p0s, subject_ps, control_ps = [], [], []
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
        knockouts = [None, *(Knockout.between([last], positions, every_layer) for positions in (subject, control))]
        p0, p_subject, p_control = engine.scores(input_ids, spans.target_id, knockouts).probability.tolist()
        p0s.append(p0)
        subject_ps.append(p_subject)
        control_ps.append(p_control)
        if len(p0s) == n_prompts:
            break
    mean_p0 = sum(p0s) / len(p0s)
    return KnockoutEffects(
        n_prompts=len(p0s),
        p0=mean_p0,
        subject_drop=1 - sum(subject_ps) / len(p0s) / mean_p0,
        control_drop=1 - sum(control_ps) / len(p0s) / mean_p0,
    )
