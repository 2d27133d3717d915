"""The gated delta rule: chunked form and hidden attention against the plain recurrence; each knockout mode
against a recurrence in which the edge is removed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from infoflow.models import delta_rule
from infoflow.models.modes import KnockoutMode
from tests.oracle import hand_knocked_delta_rule

HEADS, KEY, VALUE = 2, 4, 3


def inputs(seq_len: int, seed: int = 0, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """Random q, k (normalised), v, log gates and betas as the mixers make them."""
    generator = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(batch, seq_len, HEADS, KEY, generator=generator) for _ in range(2))
    v = torch.randn(batch, seq_len, HEADS, VALUE, generator=generator)
    log_gate = -F.softplus(torch.randn(batch, seq_len, HEADS, generator=generator))  # g <= 0
    beta = torch.sigmoid(torch.randn(batch, seq_len, HEADS, generator=generator))
    q, k = delta_rule.normalize_qk(q, k)
    return q, k, v, log_gate, beta


@pytest.mark.parametrize("seq_len", [1, 5, 16, 23])
def test_chunked_form_equals_recurrence(seq_len):
    q, k, v, g, beta = inputs(seq_len, seed=seq_len)
    expected = delta_rule.recurrence(q, k, v, g, beta)
    for chunk_size in (4, 8, 64):  # several chunks with padding, exact multiples, one chunk
        assert (delta_rule.chunked(q, k, v, g, beta, chunk_size) - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("seq_len", [1, 6, 19])
def test_hidden_attention_times_values_equals_recurrence(seq_len):
    q, k, v, g, beta = inputs(seq_len, seed=10 + seq_len)
    matrix = delta_rule.hidden_attention(q, k, g, beta)  # [B, H, T, T]
    assert torch.all(matrix.triu(1) == 0)
    mixed = torch.einsum("bhts,bshv->bthv", matrix, v)
    assert (mixed - delta_rule.recurrence(q, k, v, g, beta)).abs().max().item() <= 1e-5


def test_rows_of_the_hidden_attention_are_rows_of_the_full_matrix():
    q, k, _, g, beta = inputs(9, seed=3)
    rows = torch.tensor([2, 7, 8])
    full = delta_rule.hidden_attention(q, k, g, beta)
    assert (delta_rule.hidden_attention(q, k, g, beta, rows) - full[:, :, rows]).abs().max().item() <= 1e-6


def test_l2norm_and_scale_follow_transformers():
    from transformers.models.qwen3_next.modeling_qwen3_next import l2norm

    q, k = torch.randn(2, 3, HEADS, KEY), torch.randn(2, 3, HEADS, KEY)
    ours_q, ours_k = delta_rule.normalize_qk(q, k)
    torch.testing.assert_close(ours_k, l2norm(k, eps=1e-6), rtol=0, atol=0)
    torch.testing.assert_close(ours_q, l2norm(q, eps=1e-6) * KEY**-0.5, rtol=0, atol=0)


def knocked(inputs_: tuple[torch.Tensor, ...], edges: set[tuple[int, int]], mode: KnockoutMode) -> torch.Tensor:
    """Row t of the materialised knocked-out hidden attention, one entry per target row (the engines' layout)."""
    q, k, v, g, beta = inputs_
    seq_len = q.shape[1]
    out = delta_rule.recurrence(q, k, v, g, beta)
    for t in sorted({t for t, _ in edges}):
        blocked = torch.zeros(q.shape[0], seq_len, seq_len, dtype=torch.bool)
        blocked[:, t, [s for target, s in edges if target == t]] = True
        matrix = delta_rule.knockout_hidden_attention(q, k, g, beta, blocked, mode, rows=torch.tensor([t]))
        out[:, t] = torch.einsum("bhs,bshv->bhv", matrix[:, :, 0], v)
    return out


@pytest.mark.parametrize("beta_scale", [1.0, 2.0])  # 2: OLMo-Hybrid's beta in (0, 2) (negative eigenvalues)
@pytest.mark.parametrize("mode", [KnockoutMode.WRITE_ONLY, KnockoutMode.WRITE_AND_ERASE, KnockoutMode.ZERO_DELTA])
def test_each_mode_equals_the_recurrence_with_the_edge_removed_by_hand(mode, beta_scale):
    q, k, v, g, beta = inputs(8, seed=4)
    case = (q, k, v, g, beta * beta_scale)
    edges = {(7, 2), (7, 5), (5, 1), (3, 3), (6, 0)}
    expected = hand_knocked_delta_rule(delta_rule.recurrence, case, edges, mode)
    ours = knocked(case, edges, mode)
    assert (ours - expected).abs().max().item() <= 1e-5
    clean = delta_rule.recurrence(*case)
    assert torch.equal(ours[:, [0, 1, 2, 4]], clean[:, [0, 1, 2, 4]])  # rows without a blocked edge untouched
    assert (ours[:, [3, 5, 6, 7]] - clean[:, [3, 5, 6, 7]]).abs().amax(dim=(0, 2, 3)).min().item() > 1e-3


def test_modes_differ_only_where_their_readings_differ():
    """Blocking s = 0: no earlier memory to erase, so write-only and write-and-erase agree; zero-delta also
    drops the gate of step 0, which decays nothing. Blocking a later source separates all three."""
    case = inputs(7, seed=5)
    by_mode = {mode: knocked(case, {(6, 0)}, mode) for mode in (KnockoutMode.WRITE_ONLY, *list(KnockoutMode)[1:])}
    first = [by_mode[mode][:, 6] for mode in by_mode]
    assert max((a - first[0]).abs().max().item() for a in first) <= 1e-5
    later = [knocked(case, {(6, 3)}, mode)[:, 6] for mode in by_mode]
    for i in range(3):
        for j in range(i):
            assert (later[i] - later[j]).abs().max().item() > 1e-3


def test_no_blocked_edge_is_the_clean_matrix_exactly():
    q, k, _, g, beta = inputs(6, seed=6)
    clean = delta_rule.hidden_attention(q, k, g, beta)
    nothing = torch.zeros(2, 6, 6, dtype=torch.bool)
    for mode in KnockoutMode:
        assert torch.equal(delta_rule.knockout_hidden_attention(q, k, g, beta, nothing, mode), clean)
        assert torch.equal(delta_rule.knockout_hidden_attention(q, k, g, beta, None, mode), clean)


def test_knocked_matrix_stays_causal():
    """Changing the inputs of the last position changes no earlier row, in any mode."""
    case = inputs(6, seed=7)
    changed = tuple(x.clone() for x in case)
    for x in changed:
        x[:, -1] = x[:, -1] * 0.5 + 0.1
    blocked = torch.zeros(2, 6, 6, dtype=torch.bool)
    blocked[:, 4, 1] = True
    for mode in KnockoutMode:
        before, after = (
            delta_rule.knockout_hidden_attention(q, k, g, beta, blocked, mode) for q, k, _, g, beta in (case, changed)
        )
        assert torch.equal(before[:, :, :-1], after[:, :, :-1])
        assert torch.all(before.triu(1) == 0)
