"""RWKV-4: our forward pass equals transformers' on random-weight models (rescaled layers included); the WKV's
hidden attention reproduces the recurrence; each knockout mode equals transformers' layer with the edge removed
by hand; strict closes both token shifts."""

import pytest
import torch
from transformers import RwkvConfig, RwkvForCausalLM
from transformers.models.rwkv import modeling_rwkv

from infoflow.interventions.knockout import Knockout, KnockoutMode
from infoflow.interventions.layer_knockout import layer_knockouts
from infoflow.models import rwkv
from infoflow.models.base import lookback_cut
from infoflow.models.modes import MixerKind
from infoflow.models.registry import find_model
from tests.oracle import (
    assert_knockout_equals_theirs,
    mixer_reconstruction_error,
    randomize_,
    save_and_load,
)

VOCAB = 97
MODES = (KnockoutMode.RENORMALIZE, KnockoutMode.NUMERATOR_ONLY, KnockoutMode.ZERO_DELTA)


def rwkv_config(**overrides) -> RwkvConfig:
    options = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        attention_hidden_size=24,
        intermediate_size=48,
        num_hidden_layers=3,
        rescale_every=2,
        context_length=64,
    )
    return RwkvConfig(**{**options, **overrides})


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    theirs = randomize_(RwkvForCausalLM(rwkv_config()), seed=11)
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp("rwkv"))


def prompt(seq_len: int, seed: int = 0, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


def test_layout(pair):
    _, ours = pair
    assert ours.family == "rwkv"
    assert ours.layer_kinds == (MixerKind.RWKV,) * 3
    assert [ours.block(layer).residual_scale for layer in range(3)] == [1.0, 0.5, 1.0]
    assert ours.mixer(2).output_scale == 0.5


@pytest.mark.parametrize("seq_len", [1, 4, 17])
def test_logits_equal_transformers(pair, seq_len):
    theirs, ours = pair
    with torch.no_grad():
        expected = theirs(prompt(seq_len, seed=seq_len), use_cache=False).logits
        assert (expected - ours(prompt(seq_len, seed=seq_len))).abs().max().item() <= 1e-4


def test_logits_equal_transformers_without_rescaling(tmp_path):
    theirs = randomize_(RwkvForCausalLM(rwkv_config(rescale_every=0, attention_hidden_size=None)), seed=12)
    ours = save_and_load(theirs, tmp_path)
    with torch.no_grad():
        assert (theirs(prompt(9), use_cache=False).logits - ours(prompt(9))).abs().max().item() <= 1e-4


def test_hidden_attention_reproduces_mixer(pair):
    _, ours = pair
    assert mixer_reconstruction_error(ours, prompt(11, seed=3)) <= 1e-5


def plain_wkv(time_decay: torch.Tensor, time_first: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The WKV by its definition, unstabilised sums in float64: k, v [B, T, C] -> [B, T, C]."""
    w, u = time_decay.double().exp(), time_first.double()
    k, v = k.double(), v.double()
    numerator, denominator, out = torch.zeros_like(k[:, 0]), torch.zeros_like(k[:, 0]), []
    for t in range(k.shape[1]):
        bonus = torch.exp(u + k[:, t])
        out.append((numerator + bonus * v[:, t]) / (denominator + bonus))
        numerator = torch.exp(-w) * numerator + torch.exp(k[:, t]) * v[:, t]
        denominator = torch.exp(-w) * denominator + torch.exp(k[:, t])
    return torch.stack(out, dim=1)


def test_matrix_and_recurrence_equal_the_plain_wkv():
    generator = torch.Generator().manual_seed(4)
    k, v = torch.randn(2, 13, 6, generator=generator) * 2, torch.randn(2, 13, 6, generator=generator)
    time_decay, time_first = torch.randn(6, generator=generator), torch.randn(6, generator=generator)
    expected = plain_wkv(time_decay, time_first, k, v)
    theirs, _ = modeling_rwkv.rwkv_linear_attention_cpu(time_decay, time_first, k, v)
    ours = rwkv.wkv_recurrence(time_decay, time_first, k, v)
    logits = rwkv.wkv_logits(time_decay, time_first, k, torch.arange(13))
    weights = rwkv.wkv_weights(logits, None, renormalize=True)  # [B, C, T, T]
    from_matrix = torch.einsum("bcts,bsc->btc", weights, v)
    for result in (theirs, ours, from_matrix):
        assert (result.double() - expected).abs().max().item() <= 1e-5
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 6, 13))  # a softmax: every row sums to 1


def hand_wkv(time_decay, time_first, k, v, edges: set[tuple[int, int]], mode: KnockoutMode) -> torch.Tensor:
    """transformers' WKV [1, T, C] with, for each target t, its blocked sources removed by explicit sums over s:
    from numerator and denominator, from the numerator only, or with their steps skipped (zero-delta)."""
    out, _ = modeling_rwkv.rwkv_linear_attention_cpu(time_decay, time_first, k, v)
    out = out.clone()
    w, u = time_decay.exp(), time_first
    for t in sorted({t for t, _ in edges}):
        blocked = {s for target, s in edges if target == t}
        terms = []
        for s in range(t + 1):
            if s == t:
                logit = u + k[0, t]
            else:
                steps = sum(1 for r in range(s + 1, t) if not (mode is KnockoutMode.ZERO_DELTA and r in blocked))
                logit = k[0, s] - steps * w
            terms.append((s, torch.exp(logit)))
        denominator = sum(e for s, e in terms if mode is KnockoutMode.NUMERATOR_ONLY or s not in blocked)
        numerator = sum((e * v[0, s] for s, e in terms if s not in blocked), torch.zeros_like(w))
        out[0, t] = numerator / denominator
    return out


def patch_layer_wkv(monkeypatch, layer, edges, mode):
    """transformers' WKV of ``layer`` (recognised by its time_decay) knocked out by hand."""
    real = modeling_rwkv.rwkv_linear_attention

    def wkv(time_decay, time_first, key, value, state=None, return_state=False):
        if time_decay is layer.time_decay:
            return hand_wkv(time_decay, time_first, key, value, edges, mode), None
        return real(time_decay, time_first, key, value, state=state, return_state=return_state)

    monkeypatch.setattr(modeling_rwkv, "rwkv_linear_attention", wkv)


@pytest.mark.parametrize("mode", MODES)
def test_knockout_equals_hand_computation(pair, mode, monkeypatch):
    theirs, ours = pair
    edges = {(6, 2), (6, 4), (4, 1), (3, 3), (5, 0)}
    input_ids = prompt(7, seed=5, batch=1)
    patch_layer_wkv(monkeypatch, theirs.rwkv.blocks[1].attention, edges, mode)
    assert_knockout_equals_theirs(theirs, ours, input_ids, Knockout(edges=tuple(edges), layers=(1,), mode=mode))


def test_modes_differ():
    """Renormalising, the numerator alone and skipping the step give three different rows (and agree where
    nothing is blocked)."""
    generator = torch.Generator().manual_seed(9)
    k, v = torch.randn(1, 6, 4, generator=generator), torch.randn(1, 6, 4, generator=generator)
    time_decay, time_first = torch.randn(4, generator=generator), torch.randn(4, generator=generator)
    rows = [hand_wkv(time_decay, time_first, k, v, {(5, 2)}, mode)[0] for mode in MODES]
    for i in range(3):
        assert torch.equal(rows[i][:5], rows[0][:5])
        for j in range(i):
            assert (rows[i][5] - rows[j][5]).abs().max().item() > 1e-4


def test_strict_closes_both_token_shifts(pair):
    """Blocking t <- t-1 alone: the WKV term, the time-mix shift (k, v, r at t) and the channel-mix shift at t
    all carry token t-1; only strict removes the shifts, and then the layer's output at t is independent of
    token t-1's residual stream."""
    _, ours = pair
    input_ids, changed = prompt(6, seed=2, batch=1), prompt(6, seed=2, batch=1)
    changed[0, 3] = (changed[0, 3] + 1) % VOCAB

    def layer0_output(ids: torch.Tensor, strict: bool) -> torch.Tensor:
        knockout = Knockout(edges=((4, 3),), layers=(0,), strict=strict)
        return ours.residual_stream(ids, layer_knockouts(ours, knockout, 6))[1][0, 4]

    with torch.no_grad():
        assert torch.equal(layer0_output(input_ids, True), layer0_output(changed, True))
        assert not torch.equal(layer0_output(input_ids, False), layer0_output(changed, False))


def test_decay_norms_rank_channels(pair):
    theirs, ours = pair
    time_decay = theirs.rwkv.blocks[0].attention.time_decay
    torch.testing.assert_close(ours.mixer(0).decay_norms(), torch.exp(-torch.exp(time_decay)))


def test_registry_aliases_name_this_family(pair):
    _, ours = pair
    entry = find_model("rwkv4-169m")
    assert (entry.family, entry.hub_id, entry.n_layers) == (ours.family, "RWKV/rwkv-4-169m-pile", 12)


def test_lookback_cut_reads_the_blocked_edges_one_and_two_back():
    blocked = torch.zeros(1, 4, 4, dtype=torch.bool)
    blocked[0, 2, 1] = blocked[0, 3, 1] = blocked[0, 0, 0] = True
    cut = lookback_cut(blocked, 2)  # [1, T, 2]: cut[t, j] = blocked[t, t-1-j]
    expected = torch.tensor([[False, False], [False, False], [True, False], [False, True]])
    assert torch.equal(cut[0], expected)
