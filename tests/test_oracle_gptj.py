"""GPT-J: our forward pass equals transformers' on random-weight models (parallel attention and MLP on one
LayerNorm, interleaved rotary on part or all of each head); attention knockout semantics
(tests/attention_suite.py)."""

import pytest
import torch
from transformers import GPTJConfig, GPTJForCausalLM

from infoflow.models.gptj import build, convert_state_dict
from tests.attention_checks import VOCAB
from tests.attention_suite import AttentionOracleSuite
from tests.oracle import randomize_, save_and_load

CASES = {
    # GPT-J-6B's layout: a quarter of each head rotated (64 of 256 there)
    "gptj": dict(n_head=2, rotary_dim=4),
    # every dim of each head rotated, plain gelu, custom MLP width
    "full_rotary": dict(n_head=4, rotary_dim=8, activation_function="gelu", n_inner=48),
}


def config(**options) -> GPTJConfig:
    return GPTJConfig(
        vocab_size=VOCAB,
        n_positions=32,
        n_embd=32,
        n_layer=3,
        layer_norm_epsilon=1e-4,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
        **options,
    )


@pytest.fixture(params=sorted(CASES), scope="module")
def pair(request, tmp_path_factory):
    theirs = randomize_(GPTJForCausalLM(config(**CASES[request.param])), seed=4)
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp(request.param)), None


class TestGPTJ(AttentionOracleSuite):
    family = "gptj"

    def their_attention(self, theirs, layer, normed, mask):
        positions = torch.arange(normed.shape[1])[None]
        return theirs.transformer.h[layer].attn(normed, attention_mask=mask, position_ids=positions)[0]


def test_one_norm_for_attention_and_mlp(pair):
    _, ours, _ = pair
    assert all(block.parallel and block.mlp_norm is None for block in ours.blocks)
    assert ours.mixer(0).rotary.interleaved and ours.lm_head.bias is not None


def test_mask_buffers_of_older_checkpoints_dropped():
    weight = torch.zeros(2)
    converted = convert_state_dict(
        {
            "transformer.h.0.attn.bias": torch.ones(1, 1, 4, 4, dtype=torch.bool),
            "transformer.h.0.attn.masked_bias": torch.tensor(-1e9),
            "transformer.h.0.mlp.fc_in.bias": weight,
            "lm_head.bias": weight,
        }
    )
    assert converted.keys() == {"blocks.0.mlp.c_fc.bias", "lm_head.bias"}


def test_too_long_and_unsupported():
    with torch.device("meta"):
        model = build(config(n_head=2, rotary_dim=4))
    with pytest.raises(ValueError, match="at most 32"):
        model.check_length(33)
    with pytest.raises(ValueError, match="rotary_dim=32"):
        build(config(n_head=2, rotary_dim=32))
    with pytest.raises(ValueError, match="activation_function"):
        build(config(n_head=2, rotary_dim=4, activation_function="no_such_act"))
