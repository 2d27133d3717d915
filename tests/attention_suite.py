"""The oracle checks every attention family passes, as a base class: a family's test module subclasses
:class:`AttentionOracleSuite` in a ``Test...`` class and gives it a ``pair`` fixture (transformers' model, ours
loaded from its ``save_pretrained`` folder, the sliding window of layer 1) and ``their_heads``."""

from __future__ import annotations

from abc import ABC, abstractmethod

import pytest
import torch
from torch import nn
from transformers import PreTrainedModel

from infoflow.interventions.knockout import Knockout
from infoflow.interventions.layer_knockout import LayerKnockout
from infoflow.models.base import CausalLM
from tests.attention_checks import (
    assert_blocked_row_gives_zero_attention_output,
    assert_knockout_is_causal,
    assert_ssm_modes_rejected,
    assert_tail_and_rows_consistent,
    manual_knocked_attention,
    random_ids,
)
from tests.oracle import max_logit_difference, mixer_reconstruction_error

Pair = tuple[PreTrainedModel, CausalLM, int | None]


class AttentionOracleSuite(ABC):
    family: str

    @abstractmethod
    def their_heads(
        self, theirs: PreTrainedModel, layer: int, normed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, nn.Module]:
        """transformers' rotated q, k, v [B, H, T, P] (k, v repeated per query head) of the normed inputs [B, T, D]
        in ``layer``, its attention scale and output projection."""

    @pytest.mark.parametrize("seq_len", [1, 4, 5, 17])
    def test_logits_equal_transformers(self, pair: Pair, seq_len: int) -> None:
        theirs, ours, _ = pair
        assert max_logit_difference(theirs, ours, random_ids(seq_len, seed=seq_len)) <= 1e-4

    def test_hidden_attention_reproduces_mixer(self, pair: Pair) -> None:
        _, ours, _ = pair
        assert mixer_reconstruction_error(ours, random_ids(11, seed=3)) <= 1e-5

    def test_family_and_no_buffers(self, pair: Pair) -> None:
        _, ours, _ = pair
        assert ours.family == self.family and not list(ours.buffers())

    def test_blocked_edge_equals_manual_softmax(self, pair: Pair) -> None:
        """One layer: transformers' projections and rotary, then a plain softmax with the blocked logits removed."""
        theirs, ours, window = pair
        layer, seq_len, edges = 1, 8, ((6, 4), (6, 5), (3, 0), (7, 7))
        normed = ours.blocks[layer].mixer_norm(ours.residual_stream(random_ids(seq_len, seed=11))[layer])
        blocked = Knockout(edges=edges, layers=(layer,)).blocked_matrix(seq_len)
        with torch.no_grad():
            q, k, v, scaling, out_proj = self.their_heads(theirs, layer, normed)
            expected = out_proj(manual_knocked_attention(q, k, v, scaling, edges, window))
            knocked = ours.block(layer).mixer(normed, LayerKnockout(blocked))
        assert (knocked - expected).abs().max().item() <= 1e-5

    def test_fully_blocked_row(self, pair: Pair) -> None:
        _, ours, _ = pair
        assert_blocked_row_gives_zero_attention_output(ours, layer=1, row=0)
        assert_blocked_row_gives_zero_attention_output(ours, layer=2, row=5)

    def test_knockout_is_causal(self, pair: Pair) -> None:
        _, ours, _ = pair
        assert_knockout_is_causal(ours)
        assert_ssm_modes_rejected(ours)

    def test_tail_and_rows(self, pair: Pair) -> None:
        _, ours, _ = pair
        assert_tail_and_rows_consistent(ours)
