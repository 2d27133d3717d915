"""Llama, Qwen2, Mistral: our forward pass equals transformers' on random-weight models; attention knockout."""

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from infoflow.interventions.knockout import Knockout
from infoflow.interventions.layer_knockout import LayerKnockout
from infoflow.models.llama import build
from tests.attention_checks import (
    assert_blocked_row_gives_zero_attention_output,
    assert_knockout_is_causal,
    assert_ssm_modes_rejected,
    assert_tail_and_rows_consistent,
    manual_knocked_attention,
    random_ids,
)
from tests.oracle import max_logit_difference, mixer_reconstruction_error, randomize_, save_and_load

COMMON = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=0,
    attn_implementation="eager",
)
LLAMA3_ROPE = dict(
    rope_type="llama3",
    rope_theta=500000.0,
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=16,
)
# name -> (config class, model class, options, sliding window of layer 1)
CASES = {
    "llama": (LlamaConfig, LlamaForCausalLM, dict(num_key_value_heads=4, tie_word_embeddings=True), None),
    "llama_gqa_llama3": (
        LlamaConfig,
        LlamaForCausalLM,
        dict(
            num_key_value_heads=2,
            head_dim=16,
            attention_bias=True,
            mlp_bias=True,
            tie_word_embeddings=False,
            rope_parameters=LLAMA3_ROPE,
        ),
        None,
    ),
    # layer 0 full attention, layers 1-2 sliding (max_window_layers=1)
    "qwen2": (
        Qwen2Config,
        Qwen2ForCausalLM,
        dict(num_key_value_heads=2, use_sliding_window=True, sliding_window=4, max_window_layers=1),
        4,
    ),
    "mistral": (
        MistralConfig,
        MistralForCausalLM,
        dict(num_key_value_heads=1, head_dim=8, sliding_window=4, tie_word_embeddings=False),
        4,
    ),
}


@pytest.fixture(params=sorted(CASES), scope="module")
def case(request, tmp_path_factory):
    config_class, model_class, options, window = CASES[request.param]
    theirs = randomize_(model_class(config_class(**COMMON, **options)), seed=2)
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp(request.param)), window


@pytest.mark.parametrize("seq_len", [1, 4, 5, 17])
def test_logits_equal_transformers(case, seq_len):
    theirs, ours, _ = case
    assert max_logit_difference(theirs, ours, random_ids(seq_len, seed=seq_len)) <= 1e-4


def test_hidden_attention_reproduces_mixer(case):
    _, ours, _ = case
    assert mixer_reconstruction_error(ours, random_ids(11, seed=3)) <= 1e-5


def test_no_buffers_and_family(case):
    _, ours, _ = case
    assert ours.family == "llama" and not list(ours.buffers())


def test_blocked_edge_equals_manual_softmax(case):
    """One layer: transformers' projections and rotary, then a plain softmax with the blocked logits removed."""
    theirs, ours, window = case
    layer, seq_len, edges = 1, 8, ((6, 4), (6, 5), (3, 0), (7, 7))
    attention = theirs.model.layers[layer].self_attn
    normed = ours.blocks[layer].mixer_norm(ours.residual_stream(random_ids(seq_len, seed=11))[layer])
    blocked = Knockout(edges=edges, layers=(layer,)).blocked_matrix(seq_len)
    with torch.no_grad():
        q, k, v = (
            proj(normed).unflatten(-1, (-1, attention.head_dim)).transpose(1, 2)
            for proj in (attention.q_proj, attention.k_proj, attention.v_proj)
        )
        cos, sin = theirs.model.rotary_emb(normed, torch.arange(seq_len)[None])
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        groups = attention.num_key_value_groups
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        expected = attention.o_proj(manual_knocked_attention(q, k, v, attention.scaling, edges, window))
        knocked = ours.mixer(layer)(normed, LayerKnockout(blocked))
    assert (knocked - expected).abs().max().item() <= 1e-5


def test_fully_blocked_row(case):
    _, ours, _ = case
    assert_blocked_row_gives_zero_attention_output(ours, layer=1, row=0)
    assert_blocked_row_gives_zero_attention_output(ours, layer=2, row=5)


def test_knockout_is_causal(case):
    _, ours, _ = case
    assert_knockout_is_causal(ours)
    assert_ssm_modes_rejected(ours)


def test_tail_and_rows(case):
    _, ours, _ = case
    assert_tail_and_rows_consistent(ours)


def test_length_dependent_rope_rejected():
    config = LlamaConfig(**COMMON, rope_parameters=dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0))
    with pytest.raises(ValueError, match="dynamic"):
        build(config)
