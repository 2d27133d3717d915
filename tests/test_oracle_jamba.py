"""Jamba: our forward pass equals transformers' on random-weight models (Mamba-1 with weighted dt/B/C norms, NoPE
attention, MoE MLPs); knockouts per kind of layer."""

import pytest
import torch
from transformers import JambaConfig, JambaForCausalLM

from infoflow.models.jamba import build
from infoflow.models.modes import MixerKind
from infoflow.models.registry import find_model
from tests.hybrid_checks import assert_attention_knockout_matches_manual, assert_knockouts_per_kind_of_layer, prompt
from tests.oracle import max_logit_difference, mixer_reconstruction_error, randomize_, save_and_load

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


@pytest.mark.parametrize("seq_len", [1, 5, 17, 20])
def test_logits_equal_transformers(pair, seq_len):
    theirs, ours = pair
    assert max_logit_difference(theirs, ours, prompt(VOCAB, seq_len, seed=seq_len)) <= 1e-4


@pytest.mark.parametrize("seq_len", [11, 19])
def test_hidden_attention_reproduces_every_mixer(pair, seq_len):
    _, ours = pair
    assert mixer_reconstruction_error(ours, prompt(VOCAB, seq_len, seed=3)) <= 1e-5


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


def test_attention_knockout_equals_manual_softmax(pair):
    theirs, ours = pair
    assert_attention_knockout_matches_manual(ours, theirs.model.layers[2].self_attn, 2)


def test_knockouts_per_kind_of_layer(pair):
    _, ours = pair
    assert_knockouts_per_kind_of_layer(ours, attention_layer=2)


def test_other_conv_activations_are_refused():
    with pytest.raises(ValueError, match="hidden_act='gelu' is not supported"):
        build(jamba_config(hidden_act="gelu"))


def test_registry_aliases_name_this_family(pair):
    _, ours = pair
    assert all(find_model(alias).family == ours.family for alias in ("jamba-tiny-dev",))
