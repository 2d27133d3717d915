"""The oracle checks every attention family passes, as a base class: a family's test module subclasses
:class:`AttentionOracleSuite` in a ``Test...`` class and gives it a ``pair`` fixture (transformers' model, ours
loaded from its ``save_pretrained`` folder, the sliding window of its layers) and ``their_attention``."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import ClassVar

import pytest
import torch
from transformers import PreTrainedModel

from infoflow.interventions.knockout import Knockout
from infoflow.interventions.layer_knockout import LayerKnockout
from infoflow.models.base import CausalLM
from tests.attention_checks import (
    assert_blocked_row_gives_zero_attention_output,
    assert_knockout_is_causal,
    assert_ssm_modes_rejected,
    assert_tail_and_rows_consistent,
    random_ids,
)
from tests.oracle import max_logit_difference, mixer_reconstruction_error, randomize_, save_and_load

Pair = tuple[PreTrainedModel, CausalLM, int | None]
# the knockout of the masked-attention check: (8, 2) lies outside a window of 4, so it is absent already there
EDGES = ((6, 4), (6, 5), (3, 0), (7, 7), (8, 2), (8, 7))


class AttentionOracleSuite(ABC):
    family: str

    @abstractmethod
    def their_attention(
        self, theirs: PreTrainedModel, layer: int, normed: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The output [B, T, D] of transformers' own attention module of ``layer`` (its projections, rotary,
        scale and output projection) on the normed inputs [B, T, D], with the additive ``mask`` [1, 1, T, T]."""

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

    def their_window(self, theirs: PreTrainedModel, layer: int, window: int | None) -> int | None:
        """The sliding window of transformers' ``layer`` (``window``: the pair's, the same in every layer)."""
        return window

    def test_knockout_equals_transformers_attention_with_blocked_edges_masked(self, pair: Pair) -> None:
        """Every layer: transformers' own attention module given a mask that is -inf on the blocked edges as
        well as on the future and outside the window."""
        theirs, ours, window = pair
        seq_len = 9
        blocked = Knockout(edges=EDGES, layers=(0,)).blocked_matrix(seq_len)  # [T, T]
        with torch.no_grad():
            for layer, residual in enumerate(ours.residual_stream(random_ids(seq_len, seed=11))[:-1]):
                allowed = torch.ones(seq_len, seq_len, dtype=torch.bool).tril() & ~blocked
                layer_window = self.their_window(theirs, layer, window)
                if layer_window is not None:
                    allowed &= torch.ones_like(allowed).triu(1 - layer_window)  # t - s < window
                mask = torch.zeros(1, 1, seq_len, seq_len).masked_fill(~allowed, float("-inf"))
                normed = ours.blocks[layer].mixer_norm(residual)
                expected = self.their_attention(theirs, layer, normed, mask)
                knocked = ours.mixer(layer)(normed, LayerKnockout(blocked))
                assert (knocked - expected).abs().max().item() <= 1e-5, f"layer {layer}"

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

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
    def test_half_precision_as_close_as_transformers_own(self, pair: Pair, dtype: torch.dtype) -> None:
        """In bf16/fp16 our logits are at most twice as far from the fp32 logits as transformers' own in that
        dtype (two roundings of the same computation; observed ratios 0.8-1.4)."""
        theirs, ours, _ = pair
        input_ids = random_ids(13, seed=4)
        with torch.no_grad():
            exact = theirs(input_ids).logits
            theirs_half = copy.deepcopy(theirs).to(dtype)(input_ids).logits.float()
            ours_half = copy.deepcopy(ours).to(dtype)(input_ids).float()
        assert torch.isfinite(ours_half).all()
        assert (ours_half - exact).abs().max().item() <= 2 * (theirs_half - exact).abs().max().item() + 1e-6


class DecoderLayersSuite(AttentionOracleSuite):
    """The suite for families laid out as transformers' Llama (``model.layers[i].self_attn``, ``model.rotary_emb``):
    subclasses set ``family`` and ``model`` (a tiny transformers model with ``attn_implementation="eager"``);
    ``rope_per_layer_type`` where rotary depends on the layer's type; ``norm_offset`` 1 where norms multiply by
    ``1 + w`` (their random weights are then centred on 0). Each layer's window is its module's."""

    rope_per_layer_type: ClassVar[bool] = False
    norm_offset: ClassVar[float] = 0.0

    @staticmethod
    @abstractmethod
    def model() -> PreTrainedModel: ...

    @pytest.fixture(scope="class")
    @classmethod
    def pair(cls, tmp_path_factory: pytest.TempPathFactory) -> Pair:
        theirs = randomize_(cls.model(), seed=2)
        with torch.no_grad():
            for name, parameter in theirs.named_parameters():
                if "norm" in name and name.endswith("weight"):
                    parameter -= cls.norm_offset
        return theirs, save_and_load(theirs, tmp_path_factory.mktemp(cls.__name__)), None

    def their_window(self, theirs: PreTrainedModel, layer: int, window: int | None) -> int | None:
        return getattr(theirs.model.layers[layer].self_attn, "sliding_window", None)

    def their_attention(
        self, theirs: PreTrainedModel, layer: int, normed: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        by_type = {"layer_type": theirs.config.layer_types[layer]} if self.rope_per_layer_type else {}
        rotary = theirs.model.rotary_emb(normed, torch.arange(normed.shape[1])[None], **by_type)
        return theirs.model.layers[layer].self_attn(normed, position_embeddings=rotary, attention_mask=mask)[0]
