"""The built-in models really route facts from the subject to the last token (reference knockout semantics), and
the built-in hybrids route it through their attention layers only (docs/hybrids.md, "What it shows")."""

from __future__ import annotations

import random

import pytest

from infoflow.data.synthetic import SyntheticFacts
from infoflow.models import load_model
from infoflow.models.modes import MixerKind
from tests.knockout_effects import subject_vs_random_control


@pytest.mark.parametrize("name", ["builtin-mamba1", "builtin-mamba2", "builtin-gpt2", "builtin-llama"])
def test_subject_to_last_knockout_removes_the_fact(name: str) -> None:
    prompts = random.Random(0).sample(SyntheticFacts().eval_prompts(), 200)
    (effects,) = subject_vs_random_control(load_model(name), prompts, n_prompts=60)
    assert effects.n_prompts == 60
    assert effects.subject_drop >= 0.5, effects
    assert effects.control_drop <= effects.subject_drop / 2, effects


@pytest.mark.parametrize("name", ["builtin-bamba", "builtin-qwen3.5"])
def test_a_builtin_hybrid_reads_the_subject_through_attention_only(name: str) -> None:
    loaded = load_model(name)
    kinds = loaded.model.layer_kinds
    attention = [layer for layer, kind in enumerate(kinds) if kind is MixerKind.ATTENTION]
    recurrent = [layer for layer, kind in enumerate(kinds) if kind is not MixerKind.ATTENTION]
    prompts = random.Random(0).sample(SyntheticFacts().eval_prompts(), 200)
    every, through_attention, through_recurrence = subject_vs_random_control(
        loaded, prompts, n_prompts=40, layer_sets=[range(len(kinds)), attention, recurrent]
    )
    assert every.subject_drop >= 0.5 and every.control_drop <= every.subject_drop / 2, every
    assert through_attention.subject_drop >= 0.5, through_attention
    assert abs(through_recurrence.subject_drop) <= 0.05, through_recurrence
