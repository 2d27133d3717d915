"""Causal tracing on the built-in Mamba and hybrid finds the last-token site where docs/real-model.md shows it:
the last two layers of builtin-mamba1, from builtin-bamba's second attention layer (5) on."""

from __future__ import annotations

import pytest

from infoflow.data import load_dataset
from infoflow.models import load_model
from tests.tracing_effects import band_effects, trace_recall_sites


@pytest.mark.parametrize(("name", "site_from"), [("builtin-mamba1", 6), ("builtin-bamba", 5)])
def test_the_last_token_carries_the_fact_from_the_extraction_layer_on(name: str, site_from: int) -> None:
    rows = trace_recall_sites(load_model(name), load_dataset("synthetic")[::97][:40], n_prompts=6)
    below, above = band_effects(rows, range(site_from)), band_effects(rows, range(site_from, 8))
    print(f"{name}: below {below}, above {above}, p0 {rows['p0'].mean():.3f}")
    assert above["last"] >= 0.25 and below["last"] <= 0.05, (below, above)
    assert below["subject_last"] > above["subject_last"]  # the subject matters only before the extraction
