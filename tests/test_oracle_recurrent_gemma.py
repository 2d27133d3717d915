"""RecurrentGemma: our forward pass equals transformers' on random-weight models (local attention past its
window); the RG-LRU's hidden attention reproduces the scan; knockouts equal a scan with the edge removed by hand."""

import pytest
import torch
from transformers import RecurrentGemmaConfig, RecurrentGemmaForCausalLM

from infoflow.interventions.knockout import Knockout, KnockoutMode
from infoflow.models.modes import MixerKind
from tests.oracle import knocked_logits, mixer_reconstruction_error, randomize_, save_and_load

VOCAB = 97
WINDOW = 6


def recurrent_gemma_config(**overrides) -> RecurrentGemmaConfig:
    options = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        lru_width=24,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        attention_window_size=WINDOW,
        block_types=["recurrent", "attention", "recurrent"],
        pad_token_id=0,
    )
    return RecurrentGemmaConfig(**{**options, **overrides})


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    theirs = randomize_(RecurrentGemmaForCausalLM(recurrent_gemma_config()), seed=8)
    with torch.no_grad():  # norms scale by 1 + w: w around 0 (randomize_ centres norm weights at 1)
        for name, parameter in theirs.named_parameters():
            if "norm" in name:
                parameter -= 1.0
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp("recurrent_gemma"))


def prompt(seq_len: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, seq_len), generator=torch.Generator().manual_seed(seed))


def test_layout(pair):
    _, ours = pair
    assert ours.family == "recurrent_gemma"
    assert ours.layer_kinds == (MixerKind.RG_LRU, MixerKind.ATTENTION, MixerKind.RG_LRU)
    assert ours.mixer(1).sliding_window == WINDOW


@pytest.mark.parametrize("seq_len", [1, 5, 13])  # 13: past the attention window
def test_logits_equal_transformers(pair, seq_len):
    theirs, ours = pair
    with torch.no_grad():
        expected = theirs(prompt(seq_len, seed=seq_len), use_cache=False).logits
        assert (expected - ours(prompt(seq_len, seed=seq_len))).abs().max().item() <= 1e-4


def test_hidden_attention_reproduces_mixer(pair):
    _, ours = pair
    assert mixer_reconstruction_error(ours, prompt(9, seed=3)) <= 1e-5


def test_decay_norms_rank_channels(pair):
    theirs, ours = pair
    lam = theirs.model.layers[0].temporal_block.rg_lru.recurrent_param
    torch.testing.assert_close(ours.mixer(0).decay_norms(), torch.exp(-8 * torch.nn.functional.softplus(lam)))
    assert ours.mixer(1).decay_norms() is None


def hand_knocked_scan(lru, x: torch.Tensor, edges: set[tuple[int, int]], zero_delta: bool) -> torch.Tensor:
    """transformers' RG-LRU on x [1, T, W] where, for each target t, each blocked source s adds nothing to
    t's state (and with ``zero_delta`` also does not decay it), by an explicit scan per target."""
    seq_len = x.shape[1]
    out = type(lru).forward(lru, x, torch.arange(seq_len)[None]).clone()  # the clean output
    heads = x[0].reshape(seq_len, lru.num_attention_heads, -1).transpose(0, 1)  # [H, T, W/H]
    input_gate = torch.sigmoid(torch.baddbmm(lru.input_gate_bias[:, None], heads, lru.input_gate_weight))
    recurrent_gate = torch.sigmoid(torch.baddbmm(lru.recurrent_gate_bias[:, None], heads, lru.recurrent_gate_weight))
    input_gate, recurrent_gate = (g.transpose(0, 1).reshape(seq_len, -1) for g in (input_gate, recurrent_gate))
    a = torch.exp(-8.0 * recurrent_gate * torch.nn.functional.softplus(lru.recurrent_param))  # [T, W]
    multiplier = torch.sqrt(1 - a**2)
    multiplier[0] = 1.0
    inputs = x[0] * input_gate * multiplier
    for t in sorted({t for t, _ in edges}):
        blocked = {s for target, s in edges if target == t}
        state = torch.zeros_like(inputs[0])
        for r in range(t + 1):
            decay = 1.0 if (zero_delta and r in blocked) else a[r]
            state = decay * state + (0.0 if r in blocked else inputs[r])
        out[0, t] = state
    return out


@pytest.mark.parametrize("mode", [KnockoutMode.ZERO_ATTENTION, KnockoutMode.ZERO_DELTA])
def test_knockout_equals_hand_computation(pair, mode, monkeypatch):
    theirs, ours = pair
    edges = {(6, 2), (6, 4), (4, 1), (3, 3)}
    input_ids = prompt(7, seed=5)[:1]
    lru = theirs.model.layers[2].temporal_block.rg_lru
    zero_delta = mode is KnockoutMode.ZERO_DELTA
    monkeypatch.setattr(lru, "forward", lambda x, position_ids: hand_knocked_scan(lru, x, edges, zero_delta))
    with torch.no_grad():
        expected = theirs(input_ids, use_cache=False).logits[0]
        knocked = knocked_logits(ours, input_ids, Knockout(edges=tuple(edges), layers=(2,), mode=mode))[0]
        clean = ours(input_ids)[0]
    assert (knocked - expected).abs().max().item() <= 1e-4
    assert torch.equal(knocked[:3], clean[:3])
    assert (knocked[[3, 4, 6]] - clean[[3, 4, 6]]).abs().amax(-1).min().item() > 1e-5  # 4 <- 1 decays a lot
