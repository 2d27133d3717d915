"""Oracle and knockout checks that every softmax-attention family runs against transformers' own classes.

A test class subclasses :class:`AttentionFamilyChecks` and says which transformers model to build (a tiny
random config); the model is saved with ``save_pretrained`` and loaded back through our real loader.
"""

from __future__ import annotations

import copy
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

# the knockout of the masked-attention check: (8, 2) lies outside a window of 4, so it is absent already there
EDGES = ((6, 4), (6, 5), (3, 0), (7, 7), (8, 2), (8, 7))


class AttentionFamilyChecks:
    """Subclasses set ``family`` (our family name) and ``model`` (a transformers model with
    ``attn_implementation="eager"``); ``rope_per_layer_type`` where rotary depends on the layer's type;
    ``norm_offset`` 1 where norms multiply by ``1 + w`` (their random weights are then centred on 0)."""

    family: ClassVar[str]
    rope_per_layer_type: ClassVar[bool] = False
    norm_offset: ClassVar[float] = 0.0

    @staticmethod
    def model() -> PreTrainedModel:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def pair(cls, tmp_path_factory) -> tuple[PreTrainedModel, CausalLM]:
        theirs = randomize_(cls.model(), seed=2)
        with torch.no_grad():
            for name, parameter in theirs.named_parameters():
                if "norm" in name and name.endswith("weight"):
                    parameter -= cls.norm_offset
        return theirs, save_and_load(theirs, tmp_path_factory.mktemp(cls.__name__))

    @pytest.mark.parametrize("seq_len", [1, 4, 5, 17])
    def test_logits_equal_transformers(self, pair, seq_len):
        theirs, ours = pair
        assert max_logit_difference(theirs, ours, random_ids(seq_len, seed=seq_len)) <= 1e-4

    def test_hidden_attention_reproduces_mixer(self, pair):
        assert mixer_reconstruction_error(pair[1], random_ids(11, seed=3)) <= 1e-5

    def test_family_and_no_buffers(self, pair):
        assert pair[1].family == self.family and not list(pair[1].buffers())

    def test_knockout_equals_transformers_attention_with_blocked_edges_masked(self, pair):
        """Every layer: transformers' own attention module (its projections, norms, rotary, scale, soft-cap)
        given a mask that is -inf on the blocked edges as well as on the future and outside the window."""
        theirs, ours = pair
        seq_len = 9
        blocked = Knockout(edges=EDGES, layers=(0,)).blocked_matrix(seq_len)  # [T, T]
        positions = torch.arange(seq_len)[None]
        with torch.no_grad():
            for layer, residual in enumerate(ours.residual_stream(random_ids(seq_len, seed=11))[:-1]):
                attention = theirs.model.layers[layer].self_attn
                normed = ours.blocks[layer].mixer_norm(residual)
                allowed = torch.ones(seq_len, seq_len, dtype=torch.bool).tril() & ~blocked
                window = getattr(attention, "sliding_window", None)
                if window is not None:
                    allowed &= torch.ones_like(allowed).triu(1 - window)  # t - s < window
                mask = torch.zeros(1, 1, seq_len, seq_len).masked_fill(~allowed, float("-inf"))
                by_type = {"layer_type": theirs.config.layer_types[layer]} if self.rope_per_layer_type else {}
                rotary = theirs.model.rotary_emb(normed, positions, **by_type)
                expected, _ = attention(hidden_states=normed, position_embeddings=rotary, attention_mask=mask)
                knocked = ours.mixer(layer)(normed, LayerKnockout(blocked))
                assert (knocked - expected).abs().max().item() <= 1e-5, f"layer {layer}"

    def test_fully_blocked_row(self, pair):
        ours = pair[1]
        assert_blocked_row_gives_zero_attention_output(ours, layer=1, row=0)
        assert_blocked_row_gives_zero_attention_output(ours, layer=ours.n_layers - 1, row=5)

    def test_knockout_is_causal(self, pair):
        assert_knockout_is_causal(pair[1])
        assert_ssm_modes_rejected(pair[1])

    def test_tail_and_rows(self, pair):
        assert_tail_and_rows_consistent(pair[1])

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_half_precision_as_accurate_as_transformers(self, pair, dtype):
        """In bf16/fp16 our logits stay within twice transformers' own half-precision error (both against
        transformers in fp32); they are finite."""
        theirs, ours = pair
        input_ids = random_ids(13, seed=4)
        with torch.no_grad():
            exact = theirs(input_ids).logits
            theirs_error = (copy.deepcopy(theirs).to(dtype)(input_ids).logits.float() - exact).abs().max().item()
            ours_half = copy.deepcopy(ours).to(dtype)(input_ids).float()
        assert torch.isfinite(ours_half).all()
        assert (ours_half - exact).abs().max().item() <= 2 * theirs_error
