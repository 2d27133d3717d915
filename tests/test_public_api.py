"""The top-level API: every name resolves, and ``import infoflow`` loads no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import infoflow


def test_every_public_name_resolves() -> None:
    for name in infoflow.__all__:
        assert getattr(infoflow, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = infoflow.nope


def test_import_infoflow_loads_no_torch() -> None:
    code = "import sys, infoflow, infoflow.interventions.knockout; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_readme_example_runs_on_the_top_level_api() -> None:
    import torch

    loaded = infoflow.load_model("builtin-mamba1")
    fact = infoflow.load_dataset("synthetic")[5]
    spans = infoflow.find_spans(loaded.tokenizer, fact)
    last = spans.num_tokens - 1
    knockout = infoflow.Knockout.between([last], spans.positions("subject"), range(2, 8))
    ids = torch.tensor(spans.input_ids)
    fast = infoflow.FastEngine(loaded.model).scores(ids, spans.target_id, [None, knockout])
    reference = infoflow.ReferenceEngine(loaded.model).scores(ids, spans.target_id, [None, knockout])
    assert (fast.probability - reference.probability).abs().max().item() <= 1e-5
    assert fast.probability[1] < fast.probability[0]  # the subject carries the fact on the built-in model
