"""GPT-2: our forward pass equals transformers' on random-weight models; attention knockout semantics.

The knockout checks (``assert_*``) live in tests/attention_checks.py, shared with the Llama-family tests.
"""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from infoflow.interventions.knockout import Knockout
from infoflow.interventions.layer_knockout import LayerKnockout
from infoflow.models.gpt2 import build
from tests.attention_checks import (
    VOCAB,
    assert_blocked_row_gives_zero_attention_output,
    assert_knockout_is_causal,
    assert_ssm_modes_rejected,
    assert_tail_and_rows_consistent,
    manual_knocked_attention,
    random_ids,
)
from tests.oracle import max_logit_difference, mixer_reconstruction_error, randomize_, save_and_load

CASES = {
    "gpt2": {},
    # layer-scaled logits, unscaled by head size, plain gelu, custom MLP width
    "gpt2_variant": dict(
        scale_attn_by_inverse_layer_idx=True, scale_attn_weights=False, activation_function="gelu", n_inner=48
    ),
}


@pytest.fixture(params=sorted(CASES), scope="module")
def pair(request, tmp_path_factory):
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=32,
        n_embd=32,
        n_layer=3,
        n_head=4,
        layer_norm_epsilon=1e-4,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
        **CASES[request.param],
    )
    theirs = randomize_(GPT2LMHeadModel(config), seed=1)
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp(request.param))


@pytest.mark.parametrize("seq_len", [1, 5, 17, 32])
def test_logits_equal_transformers(pair, seq_len):
    theirs, ours = pair
    assert max_logit_difference(theirs, ours, random_ids(seq_len, seed=seq_len)) <= 1e-4


def test_hidden_attention_reproduces_mixer(pair):
    _, ours = pair
    assert mixer_reconstruction_error(ours, random_ids(11, seed=3)) <= 1e-5


def test_blocked_edge_equals_manual_softmax(pair):
    theirs, ours = pair
    layer, edges = 1, ((6, 2), (6, 4), (3, 0), (7, 7))
    attention = theirs.transformer.h[layer].attn
    normed = ours.blocks[layer].mixer_norm(ours.residual_stream(random_ids(8, seed=11))[layer])
    blocked = Knockout(edges=edges, layers=(layer,)).blocked_matrix(8)
    with torch.no_grad():
        q, k, v = (x.unflatten(-1, (4, -1)).transpose(1, 2) for x in attention.c_attn(normed).split(32, dim=-1))
        expected = attention.c_proj(manual_knocked_attention(q, k, v, attention.scaling, edges))
        knocked = ours.mixer(layer)(normed, LayerKnockout(blocked))
    assert (knocked - expected).abs().max().item() <= 1e-5


def test_fully_blocked_row(pair):
    _, ours = pair
    assert_blocked_row_gives_zero_attention_output(ours, layer=1, row=0)
    assert_blocked_row_gives_zero_attention_output(ours, layer=2, row=5)


def test_knockout_is_causal(pair):
    _, ours = pair
    assert_knockout_is_causal(ours)
    assert_ssm_modes_rejected(ours)


def test_tail_and_rows(pair):
    _, ours = pair
    assert_tail_and_rows_consistent(ours)


def test_too_long_and_unsupported():
    config = GPT2Config(vocab_size=VOCAB, n_positions=8, n_embd=16, n_layer=1, n_head=2)
    with torch.device("meta"):
        model = build(config)
    with pytest.raises(ValueError, match="at most 8"):
        model.check_length(9)
    with pytest.raises(ValueError, match="cross-attention"):
        build(GPT2Config(n_embd=16, n_layer=1, n_head=2, add_cross_attention=True))
