"""Gemma 2 (soft-capped attention and final logits) and Gemma 3 text (QK-norm, a rotary base per layer type):
pre- and post-norms, (1 + w) RMSNorm, scaled embeddings, query_pre_attn_scalar and alternating sliding /
full layers, against transformers' classes; prompts longer than the window of 4."""

import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig

from infoflow.models.gemma import build
from tests.attention_checks import random_ids
from tests.attention_suite import DecoderLayersSuite
from tests.oracle import max_logit_difference

COMMON = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=64,
    sliding_window=4,
    query_pre_attn_scalar=12,
    attn_implementation="eager",
)


def gemma2_config(**options) -> Gemma2Config:
    # caps small enough to bend the random logits (the checkpoints use 50 and 30 on their larger logits)
    return Gemma2Config(**COMMON, attn_logit_softcapping=2.0, final_logit_softcapping=3.0, **options)


class GemmaChecks(DecoderLayersSuite):
    norm_offset = 1.0


class TestGemma2(GemmaChecks):
    family = "gemma2"

    @staticmethod
    def model():
        config = gemma2_config()
        assert config.layer_types == ["sliding_attention", "full_attention"] * 2
        return Gemma2ForCausalLM(config)

    @pytest.mark.parametrize("cap", ["attention", "final"])
    def test_soft_caps_matter(self, pair, cap):
        """Without either cap our logits would differ: the oracle above does check both."""
        theirs, ours, _ = pair
        input_ids = random_ids(9, seed=1)
        capped = [ours.mixer(layer) for layer in range(ours.n_layers)] if cap == "attention" else [ours.lm_head]
        saved = [module.softcap if cap == "attention" else module.cap for module in capped]
        try:
            for module in capped:
                setattr(module, "softcap" if cap == "attention" else "cap", 1e9)
            assert max_logit_difference(theirs, ours, input_ids) > 1e-2
        finally:
            for module, value in zip(capped, saved, strict=True):
                setattr(module, "softcap" if cap == "attention" else "cap", value)


class TestGemma2NoCaps(GemmaChecks):
    family = "gemma2"

    @staticmethod
    def model():
        return Gemma2ForCausalLM(Gemma2Config(**COMMON, attn_logit_softcapping=None, final_logit_softcapping=None))


class TestGemma3(GemmaChecks):
    """Layers sliding, full, sliding, full; the full layers' rotary is linearly scaled on a base of its own."""

    family = "gemma3"
    rope_per_layer_type = True

    @staticmethod
    def model():
        rope = dict(
            full_attention=dict(rope_type="linear", factor=2.0, rope_theta=100000.0),
            sliding_attention=dict(rope_type="default", rope_theta=1000.0),
        )
        config = Gemma3TextConfig(**COMMON, sliding_window_pattern=2, rope_parameters=rope)
        assert config.layer_types == ["sliding_attention", "full_attention"] * 2
        return Gemma3ForCausalLM(config)


def test_bidirectional_gemma_rejected():
    config = Gemma3TextConfig(**COMMON, use_bidirectional_attention=True)
    with torch.device("meta"), pytest.raises(ValueError, match="not a causal LM"):
        build(config)
