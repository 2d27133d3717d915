"""The fast engine: the reference engine's numbers without recomputing what a knockout cannot change.

A knockout whose first knocked layer is l0 and whose first target position is p leaves the residual stream
of layers <= l0 and of positions < p exactly as in the clean run. So prompts of one length run clean once,
as a batch, caching per layer the residual stream and the mixer's prepared inputs (projections, conv
inputs, K/V); each knockout then recomputes only layers >= l0 at positions >= p, reading everything before
p from the cache. For target = last that is one position per layer, a decode step (Mamba-1: the clean
state with the blocked sources' contributions left out). Knockouts of a prompt that share p and mode run
as one batch whose members join at their own first layer; a CUDA out-of-memory error halves the batch.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from infoflow.knockout.engine import Engine, last_token_probabilities
from infoflow.knockout.spec import Knockout, KnockoutMode
from infoflow.models.base import CausalLM, LayerKnockout, TokenMixer, batch_entry, join_positions, repeat_batch

Request = tuple[torch.Tensor, Sequence[Knockout | None]]


@dataclass
class CleanRun:
    """The clean forward of P prompts of one length [P, T], with what knockout tails need from it."""

    stream: list[torch.Tensor]  # n_layers + 1 tensors [P, T, D]: the residual stream entering each layer, final
    prepared: list[Any]  # per layer: the mixer's prepared inputs on the clean stream (batch P)
    probabilities: torch.Tensor  # [P, V] next-token probabilities

    @classmethod
    def of(cls, model: CausalLM, prompts: torch.Tensor) -> CleanRun:
        model.check_length(prompts.shape[1])
        hidden = model.embed(prompts)
        stream, prepared = [hidden], []
        for block in model.blocks:
            mixer = block.mixer
            inputs = mixer.prepare(block.mixer_norm(hidden))
            hidden = block.add_mlp(hidden + mixer.project(mixer.mix(inputs), inputs))
            stream.append(hidden)
            prepared.append(inputs)
        logits = model.lm_head(model.final_norm(hidden[:, -1:]))
        return cls(stream=stream, prepared=prepared, probabilities=last_token_probabilities(logits))

    def entry(self, index: int) -> CleanRun:
        """The clean run of one of the prompts (batch of one, views)."""
        return CleanRun(
            stream=[s[index : index + 1] for s in self.stream],
            prepared=[batch_entry(p, index) for p in self.prepared],
            probabilities=self.probabilities[index : index + 1],
        )


@dataclass(frozen=True)
class Tail:
    """One knockout as the fast engine runs it: its per-layer view and where recomputation starts."""

    index: int  # position in the caller's list
    per_layer: dict[int, LayerKnockout]
    first_layer: int


def tail_mixing(
    mixer: TokenMixer, prefix: Any, tail: Any, per_layer: Sequence[LayerKnockout | None], start: int, seq_len: int
) -> torch.Tensor:
    """Mixed features [A, T - start, F, P] at the tail positions of A knockout variants of one prompt (None:
    nothing blocked in this layer); ``prefix`` is the clean run (batch of one), ``tail`` the variants'
    prepared tail. Exempt features keep the clean mixing of the variant's own inputs."""
    device = next(mixer.parameters()).device
    empty = torch.zeros(seq_len, seq_len, dtype=torch.bool, device=device)
    blocked = torch.stack([empty if k is None else k.blocked for k in per_layer])  # [A, T, T]
    first = next((k for k in per_layer if k is not None), None)
    mode = KnockoutMode.ZERO_ATTENTION if first is None else first.mode
    strict = first is not None and first.strict
    decode_step = start == seq_len - 1 and mode is KnockoutMode.ZERO_ATTENTION and not strict
    knocked = mix_rows(mixer, prefix, tail, blocked, mode, strict, start, decode_step)
    exempt_masks = [None if k is None else k.exempt for k in per_layer]
    if any(mask is not None for mask in exempt_masks):
        none_exempt = torch.zeros(mixer.n_features, dtype=torch.bool, device=device)
        exempt = torch.stack([none_exempt if m is None else m for m in exempt_masks])  # [A, F]
        clean = mix_rows(mixer, prefix, tail, torch.zeros_like(blocked), mode, False, start, decode_step)
        knocked = torch.where(exempt[:, None, :, None], clean, knocked)
    return knocked


def mix_rows(
    mixer: TokenMixer,
    prefix: Any,
    tail: Any,
    blocked: torch.Tensor,
    mode: KnockoutMode,
    strict: bool,
    start: int,
    decode_step: bool,
) -> torch.Tensor:
    """[A, T - start, F, P] with ``blocked`` [A, T, T] edges removed.

    A single tail row under zero-attention is a decode step (``mix_last_row``). Otherwise the hidden attention
    of the tail rows is materialised: zero-attention blocks its entries only, so one materialisation serves
    every row; zero-delta and strict change the sources, so each target row gets its own copy.
    """
    if decode_step:
        return mixer.mix_last_row(prefix, tail, blocked[:, -1])[:, None]
    seq_len = blocked.shape[-1]
    rows = torch.arange(start, seq_len, device=blocked.device)
    joined = join_positions(prefix, tail, start)
    if (mode is KnockoutMode.ZERO_ATTENTION and not strict) or len(rows) == 1:
        return mixer.terms(joined, blocked, mode, strict, rows).mixed()
    n_variants, n_rows = blocked.shape[0], len(rows)
    one_row = torch.zeros(n_variants, n_rows, seq_len, seq_len, dtype=torch.bool, device=blocked.device)
    one_row[:, torch.arange(n_rows), rows] = blocked[:, rows]  # copy i blocks row rows[i] only
    copies = mixer.terms(repeat_batch(joined, n_rows), one_row.flatten(0, 1), mode, strict, rows).mixed()
    return copies.unflatten(0, (n_variants, n_rows))[:, torch.arange(n_rows), torch.arange(n_rows)]


class FastEngine(Engine):
    """Reuses the clean run: each knockout recomputes only layers >= its first and positions >= its first
    target; up to ``max_batch`` knockouts per tail pass, up to ``max_prompts`` prompts per clean pass."""

    name = "fast"

    def __init__(self, model: CausalLM, max_batch: int = 256, max_prompts: int = 64) -> None:
        super().__init__(model)
        self.max_batch = max_batch
        self.max_prompts = max_prompts

    def probabilities(self, input_ids: torch.Tensor, knockouts: Sequence[Knockout | None]) -> torch.Tensor:
        return self.probabilities_many([(input_ids, knockouts)])[0]

    @torch.no_grad()
    def probabilities_many(self, requests: Sequence[Request]) -> list[torch.Tensor]:
        results: list[torch.Tensor] = [torch.empty(0)] * len(requests)
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, (input_ids, _) in enumerate(requests):
            by_length[len(input_ids)].append(index)
        for indices in by_length.values():
            for first in range(0, len(indices), self.max_prompts):
                chunk = indices[first : first + self.max_prompts]
                prompts = torch.stack([requests[i][0].view(-1) for i in chunk]).to(self.device)
                clean = CleanRun.of(self.model, prompts)
                for row, index in enumerate(chunk):
                    results[index] = self.knockout_probabilities(clean.entry(row), requests[index][1])
        return results

    def knockout_probabilities(self, clean: CleanRun, knockouts: Sequence[Knockout | None]) -> torch.Tensor:
        """Next-token probabilities [K, V] of one prompt's knockouts, from its clean run (batch of one)."""
        seq_len = clean.stream[0].shape[1]
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
            result[[tail.index for tail in tails]] = self.run_in_batches(clean, tails, start)
        return result

    def run_in_batches(self, clean: CleanRun, tails: Sequence[Tail], start: int) -> torch.Tensor:
        """``run_tails`` over batches of at most ``max_batch`` tails, halving the batch on CUDA OOM."""
        batch, done, outputs = self.max_batch, 0, []
        while done < len(tails):
            chunk = tails[done : done + batch]
            try:
                outputs.append(self.run_tails(clean, chunk, start))
            except torch.cuda.OutOfMemoryError:
                if batch == 1:
                    raise
                batch = max(1, batch // 2)
                torch.cuda.empty_cache()
                warnings.warn(f"CUDA out of memory: knockout batch size lowered to {batch}", stacklevel=2)
                continue
            done += len(chunk)
        return torch.cat(outputs)

    def run_tails(self, clean: CleanRun, tails: Sequence[Tail], start: int) -> torch.Tensor:
        """Next-token probabilities [len(tails), V] of knockouts whose first target is ``start``; ``tails``
        sorted by first layer. Each joins the batch at its first layer with the clean stream there."""
        seq_len = clean.stream[0].shape[1]
        hidden = clean.stream[0][:, start:][:0]  # [A, T - start, D], A grows as knockouts join
        joined = 0
        for layer in range(tails[0].first_layer, self.model.n_layers):
            joining = sum(1 for tail in tails[joined:] if tail.first_layer == layer)
            hidden = torch.cat([hidden, clean.stream[layer][:, start:].expand(joining, -1, -1)])
            joined += joining
            block = self.model.blocks[layer]
            mixer, prefix = block.mixer, clean.prepared[layer]
            tail = mixer.prepare_tail(block.mixer_norm(hidden), prefix, start)
            per_layer = [t.per_layer.get(layer) for t in tails[:joined]]
            mixed = tail_mixing(mixer, prefix, tail, per_layer, start, seq_len)
            hidden = block.add_mlp(hidden + mixer.project(mixed, tail))
        logits = self.model.lm_head(self.model.final_norm(hidden[:, -1:]))
        return last_token_probabilities(logits)
