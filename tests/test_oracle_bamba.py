"""Bamba: our forward pass equals transformers' on random-weight models; knockouts per kind of layer."""

import pytest
import torch
from transformers import BambaConfig, BambaForCausalLM
from transformers.models.bamba.modeling_bamba import apply_rotary_pos_emb

from infoflow.models.bamba import build
from infoflow.models.modes import MixerKind
from tests.hybrid_checks import HybridOracleSuite
from tests.oracle import max_logit_difference, prompt, randomize_, save_and_load

VOCAB = 97
CHUNK = 8  # prompts of 17 and 20 tokens take the multi-chunk path with padding
ATTENTION_LAYERS = [1, 3]


def bamba_config(**options) -> BambaConfig:
    return BambaConfig(
        **{
            "vocab_size": VOCAB,
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "attn_layer_indices": ATTENTION_LAYERS,
            "mamba_n_heads": 4,
            "mamba_d_head": 16,
            "mamba_n_groups": 2,
            "mamba_d_state": 8,
            "mamba_chunk_size": CHUNK,
            "attention_bias": True,
            "mlp_bias": True,
            "time_step_limit": (0.05, 2.0),
            **options,
        }
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    theirs = randomize_(BambaForCausalLM(bamba_config()), seed=2)
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp("bamba"))


class TestBamba(HybridOracleSuite):
    vocab, attention_layer, aliases = VOCAB, ATTENTION_LAYERS[0], ("bamba-9b", "bamba-9b-v1")

    def their_attention(self, theirs):
        layer = ATTENTION_LAYERS[0]
        cos, sin = theirs.model.rotary_emb(torch.zeros(1, 10, 32), torch.arange(10)[None])
        assert cos.shape[-1] == 4  # partial rotary: half of each head's 8 channels rotate

        def rotate(q, k):
            return apply_rotary_pos_emb(q, k, cos, sin)

        return layer, theirs.model.layers[layer].self_attn, rotate


def test_tied_embeddings_load(tmp_path):
    theirs = randomize_(BambaForCausalLM(bamba_config(tie_word_embeddings=True)), seed=3)
    ours = save_and_load(theirs, tmp_path)
    assert max_logit_difference(theirs, ours, prompt(VOCAB, 9, seed=1)) <= 1e-4


def test_layer_kinds_follow_the_config(pair):
    _, ours = pair
    kinds = [MixerKind.ATTENTION if layer in ATTENTION_LAYERS else MixerKind.SSD for layer in range(4)]
    assert ours.family == "bamba" and list(ours.layer_kinds) == kinds and ours.has_decay_features


def test_other_conv_activations_are_refused():
    with pytest.raises(ValueError, match="hidden_act='gelu' is not supported"):
        build(bamba_config(hidden_act="gelu"))
