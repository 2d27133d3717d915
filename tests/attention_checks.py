"""Knockout checks shared by the attention families' oracle tests (model-agnostic where noted)."""

import dataclasses

import pytest
import torch

from infoflow.interventions.knockout import Knockout, KnockoutMode
from infoflow.models.base import CausalLM
from infoflow.models.tails import TailRows, join_positions
from tests.oracle import knocked_logits

VOCAB = 97


def random_ids(seq_len: int, seed: int, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


def assert_blocked_row_gives_zero_attention_output(ours: CausalLM, layer: int, row: int) -> None:
    """Blocking every source of ``row`` equals replacing that row's attention output by 0 (finite, no NaN)."""
    input_ids = random_ids(9, seed=5)
    knockout = Knockout.between([row], range(row + 1), [layer])
    with torch.no_grad():
        knocked = knocked_logits(ours, input_ids, knockout)
        hidden = ours.residual_stream(input_ids)[layer]
        block = ours.block(layer)
        prepared = block.mixer_inputs(hidden)
        mixed = block.mixer.mix(prepared)
        mixed[:, row] = 0.0
        hidden = block.finish(hidden, mixed, prepared)
        for later in ours.blocks[layer + 1 :]:
            hidden = later(hidden)
        expected = ours.lm_head(ours.final_norm(hidden))
    assert torch.isfinite(knocked).all()
    assert (knocked - expected).abs().max().item() <= 1e-5


def assert_knockout_is_causal(ours: CausalLM) -> None:
    """With a knockout (fully blocked rows included), changing a token never changes earlier logits."""
    input_ids = random_ids(12, seed=7)
    changed = input_ids.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % VOCAB
    knockout = Knockout.between([0, 3, 6, 9, 11], [0, 2, 3, 5, 10], range(ours.n_layers))
    with torch.no_grad():
        before, after = knocked_logits(ours, input_ids, knockout), knocked_logits(ours, changed, knockout)
        assert torch.isfinite(before).all()
        assert (before[:, :8] - after[:, :8]).abs().max().item() <= 1e-5
        no_edges = knocked_logits(ours, input_ids, Knockout.between([], [], [0]))
        assert (no_edges - ours(input_ids)).abs().max().item() == 0.0


def assert_ssm_modes_rejected(ours: CausalLM) -> None:
    knockout = Knockout.between([3], [1], [0], mode=KnockoutMode.ZERO_DELTA)
    with pytest.raises(ValueError, match="supported by no layer"):
        knocked_logits(ours, random_ids(4, seed=0), knockout)


def assert_tail_and_rows_consistent(ours: CausalLM) -> None:
    """``prepare_tail`` from the clean prefix equals ``prepare`` of the whole prompt (positions included), and
    ``terms`` for some rows are those rows of the full terms."""
    input_ids = torch.randint(0, ours.lm_head.out_features, (1, 10), generator=torch.Generator().manual_seed(13))
    start, rows = 6, torch.tensor([2, 7, 9])
    with torch.no_grad():
        for layer, residual in enumerate(ours.residual_stream(input_ids)[:-1]):
            mixer = ours.mixer(layer)
            normed = ours.blocks[layer].mixer_norm(residual)
            full = mixer.prepare(normed)
            variants = TailRows.of([0, 0, 0], n_prompts=1, device=normed.device)
            tail = mixer.prepare_tail(normed[:, start:].expand(3, -1, -1), full, start, variants)
            tail = join_positions(full, tail, start, variants)
            for field in dataclasses.fields(full):
                expected = getattr(full, field.name).expand(3, *getattr(full, field.name).shape[1:])
                assert (getattr(tail, field.name) - expected).abs().max().item() <= 1e-6
            all_rows, some_rows = mixer.terms(full), mixer.terms(full, rows=rows)
            assert (some_rows.matrix - all_rows.matrix[:, :, rows]).abs().max().item() <= 1e-6
            assert (some_rows.mixed() - all_rows.mixed()[:, rows]).abs().max().item() <= 1e-6


def manual_knocked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scaling: float,
    blocked: tuple[tuple[int, int], ...],
    window: int | None = None,
) -> torch.Tensor:
    """Plain-torch attention [B, H, T, P] -> [B, T, H*P]: causal softmax with the blocked logits removed."""
    logits = q @ k.transpose(-1, -2) * scaling  # [B, H, T, T]
    ones = torch.ones(q.shape[2], q.shape[2], dtype=torch.bool)
    logits = logits.masked_fill(ones.triu(1), float("-inf"))  # the future
    if window is not None:
        logits = logits.masked_fill(ones.tril(-window), float("-inf"))  # t - s >= window
    for t, s in blocked:
        logits[:, :, t, s] = float("-inf")
    return (logits.softmax(-1) @ v).transpose(1, 2).flatten(2)
