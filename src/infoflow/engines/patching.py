"""Engines for patches (sublayer knockouts; restorations on a corrupted run): next-token probabilities and the
target's score for every (noise sample, patch) of a prompt.

A request's *base runs* are the clean run of its prompt, or, given noise [S, T, D], the S runs from the
noised embeddings. The reference engine runs every (sample, patch) as its own forward pass. The fast engine
runs the base runs once (a batch of S), caching what each layer's mixer prepared, and recomputes for a patch
only layers >= its first at positions >= its first (``run_tail_rows``), the patches of all samples that share
a first position and a site batched together.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from infoflow.engines.base import TargetScores, last_token_probabilities, target_scores
from infoflow.engines.fast import DEFAULT_BATCH, CleanRun, clean_tail_mixing, run_tail_rows
from infoflow.interventions.patching import Patch, RecordedRun, SitePatch, check_patch, layer_patches, record_sites
from infoflow.models.base import CausalLM, TokenMixer
from infoflow.models.modes import Site
from infoflow.models.tails import TailRows


@dataclass(frozen=True)
class PatchRequest:
    """One prompt's patches: ``None`` (or a patch that changes nothing) is the base run itself."""

    input_ids: torch.Tensor  # [T]
    target: int  # the token scored
    patches: Sequence[Patch | None]
    noise: torch.Tensor | None = None  # [S, T, D] added to the embeddings; None: the clean run (S = 1)

    @property
    def n_samples(self) -> int:
        return 1 if self.noise is None else self.noise.shape[0]


# (sample indices [n], patch indices [n], next-token probabilities [n, V]) of n (sample, patch) rows
RowBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class PatchEngine(ABC):
    """Runs the patches of one prompt on its base runs."""

    name: str

    def __init__(self, model: CausalLM) -> None:
        self.model = model

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @abstractmethod
    def row_batches(self, request: PatchRequest) -> Iterator[RowBatch]:
        """The probabilities of every (sample, patch) row of the request, in batches of rows (each row once)."""

    @torch.no_grad()
    def probabilities(self, request: PatchRequest) -> torch.Tensor:
        """Next-token probabilities [S, K, V] (fp32) of every sample under every patch."""
        out = torch.empty(request.n_samples, len(request.patches), self.model.lm_head.out_features)
        for samples, patches, probabilities in self.row_batches(request):
            out[samples.cpu(), patches.cpu()] = probabilities.cpu()
        return out

    @torch.no_grad()
    def scores(self, request: PatchRequest) -> TargetScores:
        """p(target) and whether it is the top token, each [S, K]."""
        probability = torch.empty(request.n_samples, len(request.patches))
        top1 = torch.empty(request.n_samples, len(request.patches), dtype=torch.bool)
        for samples, patches, probabilities in self.row_batches(request):
            targets = torch.full((len(probabilities),), request.target, device=probabilities.device)
            p, hit = target_scores(probabilities, targets)
            probability[samples.cpu(), patches.cpu()] = p.cpu()
            top1[samples.cpu(), patches.cpu()] = hit.cpu()
        return TargetScores(probability=probability, top1=top1)

    def prepare(self, request: PatchRequest) -> tuple[torch.Tensor, RecordedRun | None]:
        """The base runs' embeddings [S, T, D] and, where a patch restores, the clean run with its site values;
        every patch checked against the model and the prompt."""
        ids = request.input_ids.view(1, -1).to(self.device)
        self.model.check_length(ids.shape[1])
        for patch in request.patches:
            if patch is not None:
                check_patch(self.model, patch, ids.shape[1])
        embedded = self.model.embed(ids)  # [1, T, D]
        restores = any(patch is not None and patch.restore for patch in request.patches)
        clean = record_sites(self.model, embedded) if restores else None
        if request.noise is None:
            return embedded, clean
        if request.noise.shape[1:] != embedded.shape[1:]:
            raise ValueError(f"noise of shape {tuple(request.noise.shape)} does not fit embeddings {embedded.shape}")
        return embedded + request.noise.to(self.device, embedded.dtype), clean


class ReferencePatchEngine(PatchEngine):
    """One full forward pass per (sample, patch): obviously correct; the oracle."""

    name = "reference"

    def row_batches(self, request: PatchRequest) -> Iterator[RowBatch]:
        bases, clean = self.prepare(request)
        seq_len = bases.shape[1]
        for sample in range(len(bases)):
            for index, patch in enumerate(request.patches):
                interventions = layer_patches(self.model, patch, seq_len, clean)
                hidden = self.model.stream_from(bases[sample : sample + 1], dict(interventions))[-1]
                probabilities = last_token_probabilities(self.model.unembed(hidden))
                yield torch.tensor([sample]), torch.tensor([index]), probabilities


@dataclass(frozen=True)
class PatchRow:
    """A (sample, patch) row of a fast tail pass."""

    sample: int
    index: int  # the patch's index in the request
    patch: Patch

    @property
    def first_layer(self) -> int:
        return self.patch.layers[0]


class FastPatchEngine(PatchEngine):
    """Runs the base runs once; each patch recomputes layers >= its first at positions >= its first, in tail
    passes of up to ``max_batch`` rows (default ``DEFAULT_BATCH``; a CUDA out-of-memory error halves it and
    retries the pass)."""

    name = "fast"

    def __init__(self, model: CausalLM, max_batch: int | None = None) -> None:
        super().__init__(model)
        self.max_batch = max_batch or DEFAULT_BATCH

    def row_batches(self, request: PatchRequest) -> Iterator[RowBatch]:
        bases, clean = self.prepare(request)
        base = CleanRun.from_embeddings(self.model, bases)
        groups: dict[tuple[int, Site], list[PatchRow]] = defaultdict(list)
        unchanged: list[tuple[int, int]] = []
        for sample in range(len(bases)):
            for index, patch in enumerate(request.patches):
                if patch is None or not patch.changes_something:
                    unchanged.append((sample, index))
                else:
                    groups[(patch.positions[0], patch.site)].append(PatchRow(sample, index, patch))
        if unchanged:
            samples, indices = torch.tensor(unchanged).T
            yield samples, indices, base.probabilities[samples.to(self.device)]
        for (start, site), rows in groups.items():
            rows.sort(key=lambda row: (row.first_layer, row.sample))
            done = 0
            while done < len(rows):
                chunk = rows[done : done + self.max_batch]
                try:
                    probabilities = self.run_rows(base, clean, start, site, chunk)
                except torch.cuda.OutOfMemoryError:
                    if self.max_batch == 1:
                        raise
                    self.max_batch = max(1, self.max_batch // 2)  # and for the passes that follow
                    torch.cuda.empty_cache()
                    warnings.warn(f"CUDA out of memory: patch batch size lowered to {self.max_batch}", stacklevel=2)
                    continue
                done += len(chunk)
                yield torch.tensor([r.sample for r in chunk]), torch.tensor([r.index for r in chunk]), probabilities

    def run_rows(
        self, base: CleanRun, clean: RecordedRun | None, start: int, site: Site, rows: Sequence[PatchRow]
    ) -> torch.Tensor:
        """Next-token probabilities [A, V] of A rows patching ``site`` from position ``start`` on."""
        model, device = self.model, self.device
        seq_len = base.stream[0].shape[1]
        in_layer = torch.zeros(model.n_layers, len(rows), dtype=torch.bool)  # [L, A]: row a patches layer l
        at = torch.zeros(len(rows), seq_len - start, dtype=torch.bool)  # [A, T - start]: ... at position t
        for a, row in enumerate(rows):
            in_layer[list(row.patch.layers), a] = True
            at[a, [position - start for position in row.patch.positions]] = True
        in_layer, at = in_layer.to(device), at.to(device)
        restore = torch.tensor([row.patch.restore for row in rows], device=device)  # [A]
        values = {} if clean is None else clean.sites[site]  # layer -> [1, T, D]

        def mixing(layer: int, mixer: TokenMixer, prefix: Any, tail: Any, active: TailRows) -> torch.Tensor:
            return clean_tail_mixing(mixer, prefix, tail, start, seq_len, active)

        def intervention(layer: int, n_rows: int) -> SitePatch | None:
            mask = in_layer[layer, :n_rows, None] & at[:n_rows]  # [n, T - start]
            if layer not in values:
                return SitePatch(site, mask)
            clean_values = values[layer][:, start:].expand(n_rows, -1, -1)  # [n, T - start, D]
            return SitePatch(site, mask, torch.where(restore[:n_rows, None, None], clean_values, 0))

        samples, first_layers = [row.sample for row in rows], [row.first_layer for row in rows]
        return run_tail_rows(model, base, start, samples, first_layers, mixing, intervention)


PATCH_ENGINES = ("fast", "reference")


def make_patch_engine(name: str, model: CausalLM, batch_size: int | None = None) -> PatchEngine:
    """The patch engine ``name`` (fast or reference) on ``model``."""
    if name == "fast":
        return FastPatchEngine(model, max_batch=batch_size)
    if name == "reference":
        return ReferencePatchEngine(model)
    raise ValueError(f"unknown engine {name!r}; choose {' or '.join(PATCH_ENGINES)}")
