"""Granite 4.0-H: our forward pass equals transformers' on random-weight models (MoE, multipliers, NoPE or
rotary attention); knockouts per kind of layer."""

import pytest
import torch
from transformers import GraniteMoeHybridConfig, GraniteMoeHybridForCausalLM
from transformers.models.granitemoehybrid.modeling_granitemoehybrid import apply_rotary_pos_emb

from infoflow.models.granite_hybrid import build
from infoflow.models.modes import MixerKind
from tests.hybrid_checks import HybridOracleSuite
from tests.oracle import randomize_, save_and_load

VOCAB = 97
CHUNK = 8  # prompts of 17 and 20 tokens take the multi-chunk path with padding
LAYER_TYPES = ["linear_attention", "full_attention", "linear_attention", "full_attention"]
VARIANTS = {  # what each variant changes: position encoding, experts, tied embeddings
    "nope_moe": {"position_embedding_type": "nope"},
    "rope_moe": {"position_embedding_type": "rope"},
    "dense_tied": {"num_local_experts": 0, "tie_word_embeddings": True},
}


def granite_config(**options) -> GraniteMoeHybridConfig:
    return GraniteMoeHybridConfig(
        **{
            "vocab_size": VOCAB,
            "hidden_size": 32,
            "intermediate_size": 24,
            "shared_intermediate_size": 40,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "num_local_experts": 4,
            "num_experts_per_tok": 2,
            "layer_types": LAYER_TYPES,
            "mamba_n_heads": 4,
            "mamba_d_head": 16,
            "mamba_n_groups": 2,
            "mamba_d_state": 8,
            "mamba_chunk_size": CHUNK,
            "embedding_multiplier": 3.0,
            "residual_multiplier": 0.4,
            "attention_multiplier": 0.2,
            "logits_scaling": 2.5,
            **options,
        }
    )


@pytest.fixture(params=sorted(VARIANTS), scope="module")
def pair(request, tmp_path_factory):
    theirs = randomize_(GraniteMoeHybridForCausalLM(granite_config(**VARIANTS[request.param])), seed=2)
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp(request.param))


class TestGraniteHybrid(HybridOracleSuite):
    vocab, attention_layer, aliases = VOCAB, 3, ("granite4.0-h-350m", "granite4.0-h-1b")

    def their_attention(self, theirs):
        rotary = theirs.model.rotary_emb
        rotate = None
        if rotary is not None:
            cos, sin = rotary(torch.zeros(1, 10, 32), torch.arange(10)[None])

            def rotate(q, k):
                return apply_rotary_pos_emb(q, k, cos, sin)

        return 1, theirs.model.layers[1].self_attn, rotate


def test_layer_kinds_follow_the_config(pair):
    _, ours = pair
    kinds = [MixerKind.ATTENTION if kind == "full_attention" else MixerKind.SSD for kind in LAYER_TYPES]
    assert ours.family == "granitemoehybrid" and list(ours.layer_kinds) == kinds and ours.has_decay_features


def test_unknown_position_embedding_is_refused():
    with pytest.raises(ValueError, match="position_embedding_type 'alibi' is not supported"):
        build(granite_config(position_embedding_type="alibi"))
