"""Jamba: our forward pass equals transformers' on random-weight models (Mamba-1 with weighted dt/B/C norms, NoPE
attention, MoE MLPs); knockouts per kind of layer."""

import pytest
import torch
from transformers import JambaConfig, JambaForCausalLM

from infoflow.models.jamba import build
from infoflow.models.modes import MixerKind
from tests.hybrid_checks import HybridOracleSuite
from tests.oracle import prompt, randomize_, save_and_load

VOCAB = 97
KINDS = [MixerKind.SELECTIVE_SCAN] * 2 + [MixerKind.ATTENTION] + [MixerKind.SELECTIVE_SCAN] * 3
VARIANTS = {"untied": {}, "tied_proj_bias": {"tie_word_embeddings": True, "mamba_proj_bias": True}}


def jamba_config(**options) -> JambaConfig:
    return JambaConfig(
        **{
            "vocab_size": VOCAB,
            "hidden_size": 32,
            "intermediate_size": 24,
            "num_hidden_layers": 6,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "expert_layer_period": 2,
            "expert_layer_offset": 1,
            "attn_layer_period": 4,
            "attn_layer_offset": 2,
            "mamba_d_state": 8,
            "mamba_dt_rank": 4,
            **options,
        }
    )


@pytest.fixture(params=sorted(VARIANTS), scope="module")
def pair(request, tmp_path_factory):
    theirs = randomize_(JambaForCausalLM(jamba_config(**VARIANTS[request.param])), seed=2)
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp(request.param))


class TestJamba(HybridOracleSuite):
    vocab, attention_layer, aliases = VOCAB, 2, ("jamba-tiny-dev",)

    def their_attention(self, theirs):
        return 2, theirs.model.layers[2].self_attn, None  # NoPE


def test_layer_kinds_and_experts_follow_the_periods(pair):
    theirs, ours = pair
    assert ours.family == "jamba" and list(ours.layer_kinds) == KINDS and ours.has_decay_features
    experts = [hasattr(block.mlp, "router") for block in ours.blocks]
    assert experts == [n > 1 for n in theirs.config.layers_num_experts] == [False, True] * 3


def test_dt_b_c_norms_are_weighted(pair):
    """The learned weights of the dt, B and C norms are loaded and used: setting them to 1 changes the output."""
    _, ours = pair
    mixer = ours.mixer(0)
    input_ids = prompt(VOCAB, 6, seed=4)
    with torch.no_grad():
        before = ours(input_ids)
        saved = [norm.weight.clone() for norm in (mixer.dt_layernorm, mixer.b_layernorm, mixer.c_layernorm)]
        for norm in (mixer.dt_layernorm, mixer.b_layernorm, mixer.c_layernorm):
            norm.weight.fill_(1.0)
        after = ours(input_ids)
        for norm, weight in zip((mixer.dt_layernorm, mixer.b_layernorm, mixer.c_layernorm), saved, strict=True):
            norm.weight.copy_(weight)
    assert (before - after).abs().max().item() > 1e-3


def test_other_conv_activations_are_refused():
    with pytest.raises(ValueError, match="hidden_act='gelu' is not supported"):
        build(jamba_config(hidden_act="gelu"))
