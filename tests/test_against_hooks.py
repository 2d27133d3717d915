"""The hook-based knockouts of ``benchmarks.against_hooks`` compute the fast engine's numbers (needs the bench
extra, TransformerLens; skipped without it)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformer_lens", reason="the bench extra (pip install 'infoflow[bench]') is not installed")

from benchmarks.against_hooks import batched_probabilities, hooked_pair, loop_probabilities
from benchmarks.info_flow_sweep import sweep_knockouts
from infoflow.engines.fast import FastEngine
from tests.conftest import TINY_MODELS


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_hooks_match_the_fast_engine(family: str) -> None:
    config = TINY_MODELS[family]().config
    model, bridge = hooked_pair(config, torch.device("cpu"), torch.float32)
    knockouts = sweep_knockouts(6, model.n_layers, window_size=2)  # 4 sources x 3 windows
    prompts = torch.randint(0, config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(1))
    ours = FastEngine(model).probabilities_many([(p, [None, *knockouts]) for p in prompts])  # [1 + K, V] each

    loop = [loop_probabilities(bridge, p, knockouts) for p in prompts]
    batched = torch.cat(list(batched_probabilities(bridge, prompts, knockouts, rows=5))).split(len(knockouts))
    for expected, looped, in_rows in zip(ours, loop, batched, strict=True):
        # near-uniform at this init: the knockouts move p by > 1e-5, rounding by < 1e-8 (observed ~1e-9)
        assert (expected[1:] - expected[:1]).abs().max() > 1e-5
        torch.testing.assert_close(looped, expected[1:], rtol=0, atol=1e-8)
        torch.testing.assert_close(in_rows, expected[1:], rtol=0, atol=1e-8)
