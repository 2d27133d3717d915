"""xLSTM (mLSTM): our forward pass equals transformers' on random-weight models (its chunked kernel past a chunk);
the parallel form with normaliser and stabiliser reproduces the recurrence; each knockout mode equals
transformers' mLSTM with the edge removed by hand."""

import pytest
import torch
import torch.nn.functional as F
from transformers import xLSTMConfig, xLSTMForCausalLM
from transformers.models.xlstm import modeling_xlstm

from infoflow.interventions.knockout import Knockout, KnockoutMode
from infoflow.models import mlstm, xlstm
from infoflow.models.modes import MixerKind
from infoflow.models.registry import find_model
from tests.oracle import (
    assert_knockout_equals_theirs,
    knocked_logits,
    mixer_reconstruction_error,
    randomize_,
    save_and_load,
)

VOCAB = 97
EPS = 1e-6
MODES = (KnockoutMode.RENORMALIZE, KnockoutMode.NUMERATOR_ONLY, KnockoutMode.ZERO_DELTA)
sequence_kernel = modeling_xlstm.mlstm_recurrent_sequence_native


def xlstm_config(**overrides) -> xLSTMConfig:
    options = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=3,
        num_heads=4,
        chunk_size=4,
        ffn_round_up_to_multiple_of=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return xLSTMConfig(**{**options, **overrides})


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    theirs = randomize_(xLSTMForCausalLM(xlstm_config()), seed=13)
    with torch.no_grad():  # |n . q| above its floor of 1: mLSTM outputs not near 0, where the per-head norm
        for block in theirs.backbone.blocks:  # amplifies fp32 rounding (fp32 against fp64 then differs by 1e-3)
            block.mlstm_layer.q.weight *= 3
            block.mlstm_layer.k.weight *= 3
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp("xlstm"))


def prompt(seq_len: int, seed: int = 0, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


def test_layout(pair):
    _, ours = pair
    assert ours.family == "xlstm"
    assert ours.layer_kinds == (MixerKind.MLSTM,) * 3
    assert ours.mixer(0).n_features == 4


@pytest.mark.parametrize("seq_len", [1, 5, 13, 70])  # chunks of 4 and a recurrent remainder from 5 on
def test_logits_equal_transformers(pair, seq_len):
    theirs, ours = pair
    with torch.no_grad():
        expected = theirs(prompt(seq_len, seed=seq_len), use_cache=False).logits
        assert (expected - ours(prompt(seq_len, seed=seq_len))).abs().max().item() <= 1e-4


def test_hidden_attention_reproduces_mixer(pair):
    """<= 1e-5 relative to the outputs: the normaliser |sum_s W[t, s]| may cancel, so that single entries of A
    and the outputs (here up to 60) exceed 1."""
    _, ours = pair
    input_ids = prompt(11, seed=3)
    with torch.no_grad():
        largest = max(
            ours.mixer(layer).mix(ours.block(layer).mixer_inputs(residual)).abs().max().item()
            for layer, residual in enumerate(ours.residual_stream(input_ids)[:-1])
        )
    assert mixer_reconstruction_error(ours, input_ids) <= 1e-5 * largest


def inputs(seq_len: int, seed: int) -> tuple[torch.Tensor, ...]:
    """q, k [1, T, H, K], v [1, T, H, V], i [1, T, H] (large enough to move the stabiliser), f~ [1, T, H]."""
    generator = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(1, seq_len, 3, 4, generator=generator) for _ in range(2))
    v = torch.randn(1, seq_len, 3, 5, generator=generator)
    i, f = torch.randn(1, seq_len, 3, generator=generator) * 4, torch.randn(1, seq_len, 3, generator=generator) * 2
    return q, k, v, i, f


def plain_mlstm(q, k, v, i, f) -> torch.Tensor:
    """The mLSTM by its unstabilised definition in float64: C = f C + e^i k v^T, n = f n + e^i k,
    h = C^T q / (max(|n . q|, 1) + eps e^m), m the stabiliser's recurrence."""
    q, k, v, i, log_f = q.double() * q.shape[-1] ** -0.5, k.double(), v.double(), i.double(), F.logsigmoid(f.double())
    memory, normaliser, m, out = 0.0, 0.0, torch.zeros_like(i[:, 0]), []
    for t in range(q.shape[1]):
        m = torch.maximum(log_f[:, t] + m, i[:, t])
        write = torch.exp(i[:, t])[..., None]
        memory = log_f[:, t].exp()[..., None, None] * memory + (write * k[:, t])[..., None] * v[:, t, :, None, :]
        normaliser = log_f[:, t].exp()[..., None] * normaliser + write * k[:, t]
        numerator = torch.einsum("bhkv,bhk->bhv", memory, q[:, t])
        dot = torch.einsum("bhk,bhk->bh", normaliser, q[:, t]).abs()
        out.append(numerator / (torch.maximum(dot, torch.ones_like(dot)) + EPS * m.exp())[..., None])
    return torch.stack(out, dim=1)


def test_recurrence_and_matrix_equal_the_plain_mlstm():
    q, k, v, i, f = inputs(11, seed=1)
    expected = plain_mlstm(q, k, v, i, f)
    theirs = sequence_kernel(*(x.transpose(1, 2) for x in (q, k, v, i, f)), eps=EPS).transpose(1, 2)
    ours = mlstm.recurrence(q, k, v, i, F.logsigmoid(f), EPS)
    matrix = mlstm.hidden_attention(q, k, i, F.logsigmoid(f), EPS)  # [1, H, T, T]
    from_matrix = torch.einsum("bhts,bshv->bthv", matrix, v)
    for result in (theirs, ours, from_matrix):  # relative to the outputs (up to 6 here), as fp32 rounds them
        assert (result.double() - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
    assert torch.all(matrix.triu(1) == 0)


def hand_mlstm(query, key, value, igate, fgate, edges: set[tuple[int, int]], mode: KnockoutMode) -> torch.Tensor:
    """transformers' mLSTM [B, H, T, V] where each target t's blocked sources are removed by hand: their input
    gate set to -inf in a rerun of the recurrence up to t (renormalize; zero-delta also sets their forget gate
    to 1), or their terms subtracted from the clean numerator while the clean normaliser and stabiliser stay."""
    out = sequence_kernel(query, key, value, igate, fgate, eps=EPS).clone()
    scale = query.shape[-1] ** -0.5
    for t in sorted({t for t, _ in edges}):
        blocked = sorted({s for target, s in edges if target == t})
        upto = (query[:, :, : t + 1], key[:, :, : t + 1], value[:, :, : t + 1])
        if mode is KnockoutMode.NUMERATOR_ONLY:
            _, (memory, normaliser, m) = sequence_kernel(
                *upto, igate[:, :, : t + 1], fgate[:, :, : t + 1], eps=EPS, return_last_states=True
            )
            q = query[:, :, t] * scale  # [B, H, K]
            numerator = torch.einsum("bhkv,bhk->bhv", memory, q)
            dot = torch.einsum("bhk,bhk->bh", normaliser, q).abs()
            denominator = torch.maximum(dot, torch.exp(-m[..., 0])) + EPS
            for s in blocked:
                gate = F.logsigmoid(fgate[:, :, s + 1 : t + 1]).sum(-1) + igate[:, :, s] - m[..., 0]  # [B, H]
                numerator = numerator - ((q * key[:, :, s]).sum(-1) * gate.exp())[..., None] * value[:, :, s]
            out[:, :, t] = numerator / denominator[..., None]
        else:
            i, f = igate[:, :, : t + 1].clone(), fgate[:, :, : t + 1].clone()
            i[:, :, blocked] = -1e30  # e^i = 0: s writes nothing, and leaves the stabiliser
            if mode is KnockoutMode.ZERO_DELTA:
                f[:, :, blocked] = 1e4  # log f = 0: s forgets nothing either
            out[:, :, t] = sequence_kernel(*upto, i, f, eps=EPS)[:, :, t]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_knockout_equals_hand_computation(pair, mode, monkeypatch):
    theirs, ours = pair
    edges = {(6, 2), (6, 4), (4, 1), (3, 3), (5, 0)}
    input_ids = prompt(7, seed=5, batch=1)
    backend = theirs.backbone.blocks[1].mlstm_layer.mlstm_backend
    monkeypatch.setattr(
        backend,
        "forward",
        lambda query, key, value, igate, fgate, **_: (hand_mlstm(query, key, value, igate, fgate, edges, mode), None),
    )
    assert_knockout_equals_theirs(theirs, ours, input_ids, Knockout(edges=tuple(edges), layers=(1,), mode=mode))


def test_modes_differ():
    q, k, v, i, f = (x.transpose(1, 2) for x in inputs(6, seed=2))
    rows = [hand_mlstm(q, k, v, i, f, {(5, 2)}, mode)[:, :, 5] for mode in MODES]
    for a in range(3):
        for b in range(a):
            assert (rows[a] - rows[b]).abs().max().item() > 1e-4


def test_strict_is_refused(pair):
    _, ours = pair
    with pytest.raises(ValueError, match=r"strict knockout .* supported by no layer of this xlstm model"):
        knocked_logits(ours, prompt(5, batch=1), Knockout.between([4], [1], [0], strict=True))


def test_decay_norms_rank_heads(pair):
    theirs, ours = pair
    bias = theirs.backbone.blocks[0].mlstm_layer.fgate_preact.bias
    torch.testing.assert_close(ours.mixer(0).decay_norms(), torch.sigmoid(15 * torch.tanh(bias / 15)))


def test_registry_alias_names_this_family(pair):
    _, ours = pair
    entry = find_model("xlstm-7b")
    assert (entry.family, entry.hub_id, entry.n_layers) == (ours.family, "NX-AI/xLSTM-7b", 32)


@pytest.mark.parametrize("option", [{"weight_mode": "fused"}, {"use_bias": True}])
def test_unsupported_layouts_are_refused_clearly(option):
    with pytest.raises(ValueError, match=f"{next(iter(option))}.*not supported"):
        xlstm.build(xlstm_config(**option))
