"""The fast engine: the reference engine's numbers without recomputing what a knockout cannot change.

A knockout whose first knocked layer is l0 and whose first target position is p leaves the residual stream
of layers <= l0 and of positions < p exactly as in the clean run. So the prompt runs clean once, caching
per layer the residual stream and the mixer's prepared inputs (projections, conv inputs, K/V); each
knockout then recomputes only layers >= l0 at positions >= p (for target = last: one position, like a
decode step), reading everything before p from the cache. Knockouts that share p and mode run as one
batch whose members join at their own first layer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from infoflow.knockout.engine import Engine, last_token_probabilities
from infoflow.knockout.spec import Knockout, KnockoutMode
from infoflow.models.base import CausalLM, LayerKnockout, TokenMixer, repeat_batch, slice_positions


@dataclass
class CleanRun:
    """The clean forward of one prompt [1, T] with what knockout tails need from it."""

    stream: list[torch.Tensor]  # n_layers + 1 tensors [1, T, D]: residual stream entering each layer, final
    prepared: list[Any]  # per layer: the mixer's prepared inputs on the clean stream (batch of one)
    probabilities: torch.Tensor  # [V] next-token probabilities

    @classmethod
    def of(cls, model: CausalLM, prompt: torch.Tensor) -> CleanRun:
        stream = model.residual_stream(prompt)
        prepared = [block.mixer.prepare(block.mixer_norm(stream[i])) for i, block in enumerate(model.blocks)]
        logits = model.lm_head(model.final_norm(stream[-1][:, -1:]))
        return cls(stream=stream, prepared=prepared, probabilities=last_token_probabilities(logits)[0])


@dataclass(frozen=True)
class Tail:
    """One knockout as the fast engine runs it: its per-layer view and where recomputation starts."""

    index: int  # position in the caller's list
    per_layer: dict[int, LayerKnockout]
    first_layer: int


def tail_mixing(
    mixer: TokenMixer,
    prepared: Any,
    per_layer: Sequence[LayerKnockout | None],
    rows: torch.Tensor,
) -> torch.Tensor:
    """Mixed features [A, R, F, P] at ``rows`` for A knockout variants (None: nothing blocked here).

    zero-attention blocks entries of the hidden attention only, so every row comes out of one
    materialisation; zero-delta and strict change the sources, so each target row gets its own copy.
    """
    seq_len = rows[-1].item() + 1
    device = rows.device
    empty = torch.zeros(seq_len, seq_len, dtype=torch.bool, device=device)
    blocked = torch.stack([empty if k is None else k.blocked for k in per_layer])  # [A, T, T]
    first = next((k for k in per_layer if k is not None), None)
    mode = KnockoutMode.ZERO_ATTENTION if first is None else first.mode
    strict = first is not None and first.strict
    if (mode is KnockoutMode.ZERO_ATTENTION and not strict) or rows.numel() == 1:
        knocked = mixer.terms(prepared, blocked, mode, strict, rows).mixed()
    else:
        n_variants, n_rows = blocked.shape[0], rows.numel()
        one_row = torch.zeros(n_variants, n_rows, seq_len, seq_len, dtype=torch.bool, device=device)
        one_row[:, torch.arange(n_rows), rows] = blocked[:, rows]  # copy i blocks row rows[i] only
        copies = mixer.terms(repeat_batch(prepared, n_rows), one_row.flatten(0, 1), mode, strict, rows).mixed()
        knocked = copies.unflatten(0, (n_variants, n_rows))[:, torch.arange(n_rows), torch.arange(n_rows)]
    exempt_masks = [None if k is None else k.exempt for k in per_layer]
    if any(mask is not None for mask in exempt_masks):
        none_exempt = torch.zeros(mixer.n_features, dtype=torch.bool, device=device)
        exempt = torch.stack([none_exempt if m is None else m for m in exempt_masks])  # [A, F]
        clean = mixer.terms(prepared, None, rows=rows).mixed()
        knocked = torch.where(exempt[:, None, :, None], clean, knocked)
    return knocked


class FastEngine(Engine):
    """Reuses the clean run: each knockout recomputes only layers >= its first and positions >= its first
    target, batched ``max_batch`` knockouts at a time."""

    name = "fast"

    def __init__(self, model: CausalLM, max_batch: int = 256) -> None:
        super().__init__(model)
        self.max_batch = max_batch

    @torch.no_grad()
    def probabilities(self, input_ids: torch.Tensor, knockouts: Sequence[Knockout | None]) -> torch.Tensor:
        prompt = input_ids.view(1, -1).to(self.device)
        seq_len = prompt.shape[1]
        clean = CleanRun.of(self.model, prompt)
        result = clean.probabilities.expand(len(knockouts), -1).clone()
        groups: dict[tuple[int, KnockoutMode, bool], list[Tail]] = defaultdict(list)
        for index, knockout in enumerate(knockouts):
            per_layer = self.model.layer_knockouts(knockout, seq_len)
            if knockout is None or knockout.first_target is None or not per_layer:
                continue  # nothing blocked: the clean run
            groups[(knockout.first_target, knockout.mode, knockout.strict)].append(
                Tail(index=index, per_layer=per_layer, first_layer=min(per_layer))
            )
        for (start, _, _), tails in groups.items():
            tails.sort(key=lambda tail: tail.first_layer)
            for chunk_start in range(0, len(tails), self.max_batch):
                chunk = tails[chunk_start : chunk_start + self.max_batch]
                result[[tail.index for tail in chunk]] = self.run_tails(clean, chunk, start)
        return result

    def run_tails(self, clean: CleanRun, tails: Sequence[Tail], start: int) -> torch.Tensor:
        """Next-token probabilities [len(tails), V] of knockouts whose first target is ``start``; ``tails``
        sorted by first layer. Each joins the batch at its first layer with the clean stream there."""
        seq_len = clean.stream[0].shape[1]
        rows = torch.arange(start, seq_len, device=self.device)
        hidden = clean.stream[0][:, start:][:0]  # [A, T - start, D], A grows as knockouts join
        joined = 0
        for layer in range(tails[0].first_layer, self.model.n_layers):
            joining = sum(1 for tail in tails[joined:] if tail.first_layer == layer)
            clean_tail = clean.stream[layer][:, start:]
            hidden = torch.cat([hidden, clean_tail.expand(joining, -1, -1)])
            joined += joining
            block = self.model.blocks[layer]
            mixer = block.mixer
            prepared = mixer.prepare_tail(block.mixer_norm(hidden), clean.prepared[layer], start)
            mixed = tail_mixing(mixer, prepared, [tail.per_layer.get(layer) for tail in tails[:joined]], rows)
            hidden = block.add_mlp(hidden + mixer.project(mixed, slice_positions(prepared, start)))
        logits = self.model.lm_head(self.model.final_norm(hidden[:, -1:]))
        return last_token_probabilities(logits)
