"""The built-in models really route facts from the subject to the last token (reference knockout semantics)."""

from __future__ import annotations

import random

import pytest

from infoflow.data.synthetic import SyntheticFacts
from infoflow.models import load_model
from tests.knockout_effects import subject_vs_random_control


@pytest.mark.parametrize("name", ["builtin-mamba1", "builtin-mamba2", "builtin-gpt2", "builtin-llama"])
def test_subject_to_last_knockout_removes_the_fact(name: str) -> None:
    prompts = random.Random(0).sample(SyntheticFacts().eval_prompts(), 200)
    (effects,) = subject_vs_random_control(load_model(name), prompts, n_prompts=60)
    assert effects.n_prompts == 60
    assert effects.subject_drop >= 0.5, effects
    assert effects.control_drop <= effects.subject_drop / 2, effects
