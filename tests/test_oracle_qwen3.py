"""Qwen3 (QK-norm per head; sliding-window layers): our forward pass and knockout against transformers'."""

from transformers import Qwen3Config, Qwen3ForCausalLM

from tests.attention_suite import DecoderLayersSuite

COMMON = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=64,
    attn_implementation="eager",
)


class TestQwen3(DecoderLayersSuite):
    family = "qwen3"

    @staticmethod
    def model():
        return Qwen3ForCausalLM(Qwen3Config(**COMMON, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True))


class TestQwen3SlidingBias(DecoderLayersSuite):
    """Layer 0 full attention, layers 1-2 a window of 4 (max_window_layers=1); biased projections."""

    family = "qwen3"

    @staticmethod
    def model():
        config = Qwen3Config(
            **COMMON,
            num_key_value_heads=1,
            head_dim=16,
            attention_bias=True,
            use_sliding_window=True,
            sliding_window=4,
            max_window_layers=1,
            tie_word_embeddings=False,
        )
        assert config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
        return Qwen3ForCausalLM(config)
