"""OLMo 2 (post-norms, QK-norm over the whole projection): our forward pass and knockout against transformers'."""

from transformers import Olmo2Config, Olmo2ForCausalLM

from tests.attention_suite import DecoderLayersSuite


class TestOlmo2(DecoderLayersSuite):
    family = "olmo2"

    @staticmethod
    def model():
        config = Olmo2Config(
            vocab_size=97,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            pad_token_id=1,
            eos_token_id=0,
            attention_bias=True,
            attn_implementation="eager",
        )
        return Olmo2ForCausalLM(config)
