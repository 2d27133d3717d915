"""LFM2: our forward pass equals transformers' on random-weight models; the short conv's hidden attention is
banded and reproduces the mixer; a knockout zeroes exactly the blocked conv taps."""

import pytest
import torch
from transformers import Lfm2Config, Lfm2ForCausalLM

from infoflow.interventions.knockout import Knockout
from infoflow.models.modes import MixerKind
from tests.oracle import knocked_logits, max_logit_difference, mixer_reconstruction_error, randomize_, save_and_load

VOCAB = 97
KERNEL = 3


def lfm2_config(**overrides) -> Lfm2Config:
    options = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        layer_types=["conv", "conv", "full_attention", "conv"],
        conv_L_cache=KERNEL,
        block_multiple_of=16,
    )
    return Lfm2Config(**{**options, **overrides})


@pytest.fixture(scope="module", params=[False, True], ids=["no-bias", "conv-bias"])
def pair(request, tmp_path_factory):
    theirs = randomize_(Lfm2ForCausalLM(lfm2_config(conv_bias=request.param)), seed=5)
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp("lfm2"))


def prompt(seq_len: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, seq_len), generator=torch.Generator().manual_seed(seed))


def test_layout(pair):
    _, ours = pair
    assert ours.family == "lfm2" and not ours.has_decay_features
    assert ours.layer_kinds == (MixerKind.SHORT_CONV,) * 2 + (MixerKind.ATTENTION, MixerKind.SHORT_CONV)


@pytest.mark.parametrize("seq_len", [1, 2, 7, 30])
def test_logits_equal_transformers(pair, seq_len):
    theirs, ours = pair
    assert max_logit_difference(theirs, ours, prompt(seq_len, seed=seq_len)) <= 1e-4


@pytest.mark.parametrize("seq_len", [2, 11])
def test_hidden_attention_reproduces_mixer(pair, seq_len):
    _, ours = pair
    assert mixer_reconstruction_error(ours, prompt(seq_len, seed=3)) <= 1e-5


def test_hidden_attention_is_banded(pair):
    _, ours = pair
    input_ids = prompt(9, seed=4)
    matrix = ours.hidden_attention(input_ids, 0)  # [B, D, T, T]
    lag = torch.arange(9)[:, None] - torch.arange(9)[None, :]
    assert torch.all(matrix[..., (lag < 0) | (lag >= KERNEL)] == 0)
    assert torch.all(matrix[..., (lag >= 0) & (lag < KERNEL)] != 0)


def hand_knocked_conv_layer(layer, hidden: torch.Tensor, edges: set[tuple[int, int]]) -> torch.Tensor:
    """A transformers ``Lfm2DecoderLayer`` (conv) on hidden [T, D] with the conv taps of ``edges`` removed, by
    explicit sums over the kernel."""
    conv = layer.conv
    B, C, x = conv.in_proj(layer.operator_norm(hidden)).chunk(3, dim=-1)
    weight = conv.conv.weight[:, 0]  # [D, K]
    y = torch.zeros_like(x)
    for t in range(hidden.shape[0]):
        for s in range(max(0, t - KERNEL + 1), t + 1):
            if (t, s) not in edges:
                y[t] += weight[:, KERNEL - 1 - (t - s)] * B[s] * x[s]
        if conv.conv.bias is not None:
            y[t] += conv.conv.bias
    hidden = hidden + conv.out_proj(C * y)
    return hidden + layer.feed_forward(layer.ffn_norm(hidden))


def test_knockout_zeroes_the_blocked_taps(pair):
    theirs, ours = pair
    edges = {(6, 5), (6, 4), (4, 1), (3, 3), (5, 0)}  # (4, 1) and (5, 0) lie outside the band: no effect
    input_ids = prompt(7, seed=5)[:1]
    model = theirs.model
    with torch.no_grad():
        hidden = model.embed_tokens(input_ids)
        hidden = hand_knocked_conv_layer(model.layers[0], hidden[0], edges)[None]
        knocked_ours = knocked_logits(ours, input_ids, Knockout(edges=tuple(edges), layers=(0,)))[0]
        clean = ours(input_ids)[0]
        position_embeddings = model.rotary_emb(hidden, torch.arange(7)[None])
        for layer in model.layers[1:]:
            hidden = layer(hidden, position_embeddings=position_embeddings, attention_mask=None)
        expected = theirs.lm_head(model.embedding_norm(hidden))[0]
    assert (knocked_ours - expected).abs().max().item() <= 1e-4
    assert torch.equal(knocked_ours[:3], clean[:3])


def test_out_of_band_edges_change_nothing_in_a_conv_layer(pair):
    _, ours = pair
    input_ids = prompt(8, seed=6)
    with torch.no_grad():
        far = knocked_logits(ours, input_ids, Knockout.between([7], [0, 1, 2, 3, 4], [0, 1, 3]))
        assert (far - ours(input_ids)).abs().max().item() <= 1e-5
        near = knocked_logits(ours, input_ids, Knockout.between([7], [5], [0]))
        assert (near - ours(input_ids)).abs().max().item() > 1e-4
