"""The fast engine: the reference engine's numbers without recomputing what a knockout cannot change.

A knockout whose first knocked layer is l0 and whose first target position is p leaves the residual stream
of layers <= l0 and of positions < p exactly as in the clean run. So prompts of one length run clean once,
as a batch, caching per layer the residual stream and the mixer's prepared inputs (projections, conv
inputs, K/V); each knockout then recomputes only layers >= l0 at positions >= p, reading everything before
p from its prompt's cache. For target = last that is one position per layer, a decode step (Mamba-1: the
clean state with the blocked sources' contributions left out).

Knockouts of *all* prompts of a clean batch that share p, mode and strictness run as one batch of tail rows
(sorted by first layer; a row joins the batch at its first layer with its prompt's clean stream there), so
a sweep over many prompts launches each layer's kernels a few times rather than once per prompt. A CUDA
out-of-memory error halves the batch and retries; no work is lost.
"""

from __future__ import annotations

import bisect
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from infoflow.engines.base import Engine, TargetScores, last_token_probabilities, target_scores
from infoflow.interventions.knockout import FeatureSelection, Knockout, KnockoutMode
from infoflow.interventions.layer_knockout import check_knockout, exempt_features
from infoflow.interventions.patching import SitePatch
from infoflow.models.base import Block, CausalLM, TokenMixer, lookback_cut
from infoflow.models.tails import TailRows, batch_rows, join_positions, repeat_batch
from infoflow.models.transfer import to_device_async, to_host_async

Request = tuple[torch.Tensor, Sequence[Knockout | None]]
DEFAULT_BATCH = 256  # tail rows per pass on CPU, and the sizing pass on CUDA (see ``FastEngine``)
GPU_PASSES_PER_CALL = 4  # clean passes' worth of prompts a runner hands over at once on a GPU
ROW_ESTIMATE_RANGE = 2  # a tail row's memory measured on a prompt serves prompts up to this factor longer or shorter


@dataclass
class CleanRun:
    """The clean forward of P prompts of one length [P, T], with what knockout tails need from it."""

    stream: list[torch.Tensor]  # n_layers + 1 tensors [P, T, D]: the residual stream entering each layer, final
    prepared: list[Any]  # per layer: the mixer's prepared inputs on the clean stream (batch P)
    mixed: list[torch.Tensor | None]  # per layer whose MLP looks back (Block.mlp_lookback): the clean mixing
    mixed_dtypes: list[torch.dtype]  # per layer: the dtype of the clean mixing (knocked mixing is cast to it)
    probabilities: torch.Tensor  # [P, V] next-token probabilities

    @classmethod
    def of(cls, model: CausalLM, prompts: torch.Tensor) -> CleanRun:
        model.check_length(prompts.shape[1])
        return cls.from_embeddings(model, model.embed(prompts))

    @classmethod
    def from_embeddings(cls, model: CausalLM, hidden: torch.Tensor) -> CleanRun:
        """The run of P sequences from their embeddings [P, T, D] (e.g. corrupted ones)."""
        stream, prepared, kept, mixed_dtypes = [hidden], [], [], []
        for layer in range(model.n_layers):
            block = model.block(layer)
            inputs = block.mixer_inputs(hidden)
            mixed = block.mixer.mix(inputs)
            hidden = block.finish(hidden, mixed, inputs)
            stream.append(hidden)
            prepared.append(inputs)
            kept.append(mixed if block.mlp_lookback else None)
            mixed_dtypes.append(mixed.dtype)
        logits = model.unembed(hidden[:, -1:])
        return cls(stream, prepared, kept, mixed_dtypes, probabilities=last_token_probabilities(logits))

    @property
    def n_prompts(self) -> int:
        return self.probabilities.shape[0]


@dataclass(slots=True)
class Tail:
    """One knockout as the fast engine runs it: a row of a batched tail pass."""

    prompt: int  # its prompt's index in the clean run
    slot: int  # its row in the results of all the clean run's knockouts (prompt-major)
    edges: int  # its edge set, an index into its group's blocked rows
    layers: frozenset[int]
    features: FeatureSelection
    first_layer: int = field(init=False)

    def __post_init__(self) -> None:
        self.first_layer = min(self.layers)


@dataclass(frozen=True)
class TailGroup:
    """Knockouts of a clean batch that share first target, mode and strictness, and so one tail shape."""

    clean: CleanRun
    blocked: torch.Tensor  # bool [E, T - start, T]: the group's distinct edge sets, target rows start..T-1
    start: int  # the first target: tails compute positions start..T-1
    mode: KnockoutMode
    strict: bool


@dataclass(frozen=True)
class LayerRows:
    """What one layer does to the A rows of a tail pass."""

    blocked: torch.Tensor  # bool [A, T - start, T]: the edges each row blocks in this layer, target rows
    # start..T-1 (none where not knocked): memory linear in T for target = last
    exempt: torch.Tensor | None  # bool [A, F]: features a row leaves untouched (None: none anywhere)
    mode: KnockoutMode
    strict: bool

    def mlp_cut(self, lookback: int) -> torch.Tensor | None:
        """Bool [A, T, K]: what each row's MLP that looks back K positions may not read (strict knockouts
        only; a row whose every feature is exempt leaves the layer untouched); None: nothing is cut."""
        if not self.strict:
            return None
        n_rows, n_targets, seq_len = self.blocked.shape
        cut = self.blocked.new_zeros(n_rows, seq_len, lookback)  # [A, T, K]: nothing cut before the target rows
        cut[:, seq_len - n_targets :] = lookback_cut(self.blocked, lookback)  # linear in T, as the rows are
        if self.exempt is not None:
            cut = cut & ~self.exempt.all(dim=-1)[:, None, None]
        return cut


def tail_mixing(
    mixer: TokenMixer, prefix: Any, tail: Any, layer: LayerRows, start: int, rows: TailRows
) -> torch.Tensor:
    """Mixed features [A, T - start, F, P] at the tail positions of A rows (``prefix``: the clean run of
    their prompts, ``tail``: their prepared tail). Exempt features keep the clean mixing of the row's inputs."""
    seq_len = layer.blocked.shape[-1]
    decode_step = start == seq_len - 1 and layer.mode is KnockoutMode.ZERO_ATTENTION and not layer.strict
    knocked = mix_rows(mixer, prefix, tail, layer.blocked, layer.mode, layer.strict, start, decode_step, rows)
    if layer.exempt is not None:
        none_blocked = torch.zeros_like(layer.blocked)
        clean = mix_rows(mixer, prefix, tail, none_blocked, layer.mode, False, start, decode_step, rows)
        knocked = torch.where(layer.exempt[:, None, :, None], clean, knocked)
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
    rows: TailRows,
) -> torch.Tensor:
    """[A, T - start, F, P] with ``blocked`` [A, T - start, T] edges (target rows start..T-1) removed.

    A single tail row under zero-attention is a decode step (``mix_last_row``). Otherwise the hidden attention
    of the tail rows is materialised: zero-attention (and numerator-only) blocks its entries only, so one
    materialisation serves every row; modes that change the sources and strict give each target row its own copy.
    """
    if decode_step:
        return mixer.mix_last_row(prefix, tail, blocked[:, -1], rows)[:, None]
    seq_len = blocked.shape[-1]
    tail_rows, blocked = blocked, blocked.new_zeros(len(blocked), seq_len, seq_len)  # [A, T, T], as terms take it
    blocked[:, start:] = tail_rows
    positions = torch.arange(start, seq_len, device=blocked.device)
    joined = join_positions(prefix, tail, start, rows)
    if not (mode.changes_sources or strict) or len(positions) == 1:
        return mixer.terms(joined, blocked, mode, strict, positions).mixed()
    n_variants, n_rows = blocked.shape[0], len(positions)
    one_row = torch.zeros(n_variants, n_rows, seq_len, seq_len, dtype=torch.bool, device=blocked.device)
    one_row[:, torch.arange(n_rows), positions] = blocked[:, positions]  # copy i blocks row positions[i] only
    copies = mixer.terms(repeat_batch(joined, n_rows), one_row.flatten(0, 1), mode, strict, positions).mixed()
    return copies.unflatten(0, (n_variants, n_rows))[:, torch.arange(n_rows), torch.arange(n_rows)]


# (layer, mixer, prefix, tail, rows) -> the mixed features [A, T - start, F, P] of the tail rows in that layer
TailMixing = Callable[[int, TokenMixer, Any, Any, TailRows], torch.Tensor]
# (layer, n rows) -> the site patch of the first n rows in that layer (None: none)
TailPatch = Callable[[int, int], SitePatch | None]
# (layer, n rows, lookback K) -> bool [n, T, K]: what the MLP of the first n rows may not read (None: nothing)
TailCut = Callable[[int, int, int], torch.Tensor | None]


def clean_tail_mixing(
    mixer: TokenMixer, prefix: Any, tail: Any, start: int, seq_len: int, rows: TailRows
) -> torch.Tensor:
    """[A, T - start, F, P]: the tail rows mixed with nothing blocked, by the mixer's own algorithm (a decode
    step when only the last position is new, else ``mix`` over the joined positions)."""
    if start == seq_len - 1:
        nothing = torch.zeros(len(rows), seq_len, dtype=torch.bool, device=rows.prompt.device)
        return mixer.mix_last_row(prefix, tail, nothing, rows)[:, None]
    return mixer.mix(join_positions(prefix, tail, start, rows))[:, start:]


def run_tail_rows(
    model: CausalLM,
    clean: CleanRun,
    start: int,
    prompts: Sequence[int],
    first_layers: Sequence[int],
    mixing: TailMixing,
    patching: TailPatch | None = None,
    mlp_cut: TailCut | None = None,
) -> torch.Tensor:
    """Next-token probabilities [A, V] of A tail rows, variants of the runs ``prompts`` [A] (indices into
    ``clean``) that recompute positions ``start..T-1``; ``first_layers`` [A] sorted: row a joins the batch at
    layer ``first_layers[a]`` with its run's stream there. In each layer the n rows present mix as
    ``mixing(layer, mixer, prefix, tail, rows)`` says, their step's site values pass through
    ``patching(layer, n)``, and an MLP that looks back is cut as ``mlp_cut(layer, n, lookback)`` says."""
    device = model.lm_head.weight.device
    present = sorted(set(prompts))
    local = {prompt: index for index, prompt in enumerate(present)}
    rows = TailRows.of([local[prompt] for prompt in prompts], len(present), device)
    present_index = to_device_async(torch.tensor(present), device) if len(present) < clean.n_prompts else None
    run_rows = rows.prompt if present_index is None else present_index[rows.prompt]  # [A] rows of the clean run
    hidden = clean.stream[0][:0, start:]  # [A, T - start, D], A grows as rows join
    joined = 0
    for layer in range(first_layers[0], model.n_layers):
        joining = bisect.bisect_right(first_layers, layer) - joined
        hidden = torch.cat([hidden, clean.stream[layer][run_rows[joined : joined + joining], start:]])
        joined += joining
        block = model.block(layer)
        prefix = clean.prepared[layer]
        if present_index is not None:
            prefix = batch_rows(prefix, present_index)
        active = rows.head(joined)
        tail = block.tail_inputs(hidden, prefix, start, active)
        mixed = mixing(layer, block.mixer, prefix, tail, active).to(clean.mixed_dtypes[layer])
        patch = None if patching is None else patching(layer, joined)
        cut = None if mlp_cut is None or not block.mlp_lookback else mlp_cut(layer, joined, block.mlp_lookback)
        step = TailStep(block, clean, layer, run_rows[:joined], prefix, active)
        hidden = step.finish(hidden, mixed, tail, patch, cut)
    return last_token_probabilities(model.unembed(hidden[:, -1:]))


@dataclass(frozen=True)
class TailStep:
    """One layer of a tail pass over its A present rows (``run_rows`` [A]: each row's run in the clean run)."""

    block: Block
    clean: CleanRun
    layer: int
    run_rows: torch.Tensor
    prefix: Any
    rows: TailRows

    def finish(
        self,
        hidden: torch.Tensor,
        mixed: torch.Tensor,
        tail: Any,
        patch: SitePatch | None = None,
        cut: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The layer's output [A, T - start, D] at the tail positions. A block whose MLP looks back K positions
        finishes from the K clean positions before the tail (the same in every row: no knockout or patch reaches
        a position before ``start``), which are then dropped; ``cut`` [A, T, K]: what that MLP may not read."""
        block = self.block
        if block.mlp_lookback == 0:
            return block.finish(hidden, mixed, tail, patch)
        seq_len = self.clean.stream[0].shape[1]
        start = seq_len - hidden.shape[1]
        first = max(start - block.mlp_lookback, 0)
        if first < start:
            mixed_before = self.clean.mixed[self.layer]
            assert mixed_before is not None
            hidden = torch.cat([self.clean.stream[self.layer][self.run_rows, first:start], hidden], dim=1)
            mixed = torch.cat([mixed_before[self.run_rows, first:start].to(mixed.dtype), mixed], dim=1)
            tail = join_positions(self.prefix, tail, start, self.rows, first)
            patch = None if patch is None else patch.widened(start - first)
        cut = None if cut is None else cut[:, first:]
        return block.finish(hidden, mixed, tail, patch, cut)[:, start - first :]


def blocked_rows(edge_sets: Sequence[tuple[tuple[int, int], ...]], seq_len: int, start: int) -> torch.Tensor:
    """Bool [E, T - start, T]: ``Knockout.blocked_matrix(T, first_row=start)`` of each edge set (its edges checked
    in the prompt), all at once: only the rows a tail computes, so that target = last costs memory linear in T."""
    blocked = torch.zeros(len(edge_sets), seq_len - start, seq_len, dtype=torch.bool)
    kept = [(index, t - start, s) for index, edges in enumerate(edge_sets) for t, s in edges if t >= start]
    if kept:
        index, t, s = torch.tensor(kept).T
        blocked[index, t, s] = True
    targets = torch.arange(start, seq_len)[:, None]  # [T - start, 1]
    return blocked & (torch.arange(seq_len)[None, :] <= targets)  # causal edges only (s <= t)


class FastEngine(Engine):
    """Reuses the clean run: each knockout recomputes only layers >= its first and positions >= its first
    target; up to ``max_prompts`` prompts per clean pass, and their knockouts in tail passes of up to
    ``max_batch`` rows (None: ``DEFAULT_BATCH`` on CPU; on CUDA as many as fit in the free memory)."""

    name = "fast"

    def __init__(self, model: CausalLM, max_batch: int | None = None, max_prompts: int = 64) -> None:
        super().__init__(model)
        self.max_batch = max_batch
        self.max_prompts = max_prompts
        self.exempt_masks: dict[tuple[int, FeatureSelection], torch.Tensor | None] = {}
        # measured GPU memory per tail row: per (positions computed, mode, strictness), per prompt length
        self.row_bytes: dict[tuple[int, KnockoutMode, bool], dict[int, float]] = {}

    @property
    def prompts_per_call(self) -> int:  # type: ignore[override]
        """Prompts a runner hands over at once: one clean pass where they share a length; on a GPU
        ``GPU_PASSES_PER_CALL`` passes, queued while the GPU runs the last (a runner's chunk ends in a wait)."""
        return self.max_prompts * (GPU_PASSES_PER_CALL if self.device.type == "cuda" else 1)

    def probabilities(self, input_ids: torch.Tensor, knockouts: Sequence[Knockout | None]) -> torch.Tensor:
        return self.probabilities_many([(input_ids, knockouts)])[0]

    def probabilities_many(self, requests: Sequence[Request]) -> list[torch.Tensor]:
        results: list[torch.Tensor] = [torch.empty(0)] * len(requests)
        for indices, probabilities, counts in self.clean_batches(requests):
            for index, prompt_probabilities in zip(indices, probabilities.split(counts), strict=True):
                results[index] = prompt_probabilities
        return results

    def scores_many(
        self, requests: Sequence[tuple[torch.Tensor, int, Sequence[Knockout | None]]]
    ) -> list[TargetScores]:
        """Scored one clean batch at a time (only one batch's [K, V] probabilities are held at once); on a GPU
        a batch's scores are copied back while the next batch is prepared and queued."""
        results: list[TargetScores] = [TargetScores(torch.empty(0), torch.empty(0, dtype=torch.bool))] * len(requests)
        pending: list[tuple[list[int], list[int], torch.Tensor, torch.Tensor, torch.cuda.Event | None]] = []

        def collect() -> None:
            indices, counts, probability, top1, copied = pending.pop(0)
            if copied is not None:
                copied.synchronize()
            for index, p, t in zip(indices, probability.split(counts), top1.split(counts), strict=True):
                results[index] = TargetScores(probability=p, top1=t)

        for indices, probabilities, counts in self.clean_batches([(ids, ks) for ids, _, ks in requests]):
            targets = torch.tensor([requests[i][1] for i in indices]).repeat_interleave(torch.tensor(counts))
            probability, top1 = target_scores(probabilities, to_device_async(targets, self.device))  # [N]
            probability, top1, copied = to_host_async(probability), to_host_async(top1), None
            if self.device.type == "cuda":
                copied = torch.cuda.Event()
                copied.record()
            pending.append((indices, counts, probability, top1, copied))
            del probabilities  # [N, V]: not held while the next batch runs
            if len(pending) > 1:
                collect()
        while pending:
            collect()
        return results

    @torch.no_grad()
    def clean_batches(self, requests: Sequence[Request]) -> Iterator[tuple[list[int], torch.Tensor, list[int]]]:
        """Per batch of up to ``max_prompts`` prompts of one length: their request indices, the probabilities
        [sum K_p, V] of their knockouts (prompt-major) and the counts K_p."""
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, (input_ids, _) in enumerate(requests):
            by_length[len(input_ids)].append(index)
        for indices in by_length.values():
            for first in range(0, len(indices), self.max_prompts):
                chunk = indices[first : first + self.max_prompts]
                prompts = to_device_async(torch.stack([requests[i][0].view(-1) for i in chunk]), self.device)
                clean = CleanRun.of(self.model, prompts)
                knockouts = [requests[i][1] for i in chunk]
                yield chunk, self.knockout_probabilities(clean, knockouts), [len(k) for k in knockouts]

    def knockout_probabilities(self, clean: CleanRun, knockouts: Sequence[Sequence[Knockout | None]]) -> torch.Tensor:
        """Next-token probabilities [sum K_p, V] of every prompt's knockouts (prompt-major), from the clean run
        of the prompts."""
        seq_len = clean.stream[0].shape[1]
        counts = [len(prompt_knockouts) for prompt_knockouts in knockouts]
        # every row starts as its prompt's clean probabilities; knocked rows are overwritten below
        repeats = to_device_async(torch.tensor(counts), self.device)
        results = clean.probabilities.repeat_interleave(repeats, dim=0, output_size=sum(counts))
        # per group (first target, mode, strictness): its distinct edge sets, numbered, and its tails
        edge_sets: dict[tuple[int, KnockoutMode, bool], dict[tuple[tuple[int, int], ...], int]] = defaultdict(dict)
        groups: dict[tuple[int, KnockoutMode, bool], list[Tail]] = defaultdict(list)
        # every knockout is checked, also those that block nothing; what many share is checked once (a sweep has
        # 10^5 knockouts of a few edge sets and windows): layers and options, and edges with their first target
        checked: set[tuple[tuple[int, ...], KnockoutMode, bool, FeatureSelection]] = set()
        first_targets: dict[tuple[tuple[int, int], ...], int | None] = {}
        layer_sets: dict[tuple[int, ...], frozenset[int]] = {}
        slot = 0
        for prompt, prompt_knockouts in enumerate(knockouts):
            for knockout in prompt_knockouts:
                if knockout is not None:
                    options = (knockout.layers, knockout.mode, knockout.strict, knockout.features)
                    if options not in checked:
                        check_knockout(self.model, knockout)
                        checked.add(options)
                    if knockout.edges not in first_targets:
                        knockout.check_in_prompt(seq_len)
                        first_targets[knockout.edges] = knockout.first_target
                    start = first_targets[knockout.edges]
                    if start is not None and knockout.layers:
                        key = (start, knockout.mode, knockout.strict)
                        edges = edge_sets[key].setdefault(knockout.edges, len(edge_sets[key]))
                        if knockout.layers not in layer_sets:
                            layer_sets[knockout.layers] = frozenset(knockout.layers)
                        layers = layer_sets[knockout.layers]
                        groups[key].append(Tail(prompt, slot, edges, layers, knockout.features))
                slot += 1
        for (start, mode, strict), tails in groups.items():
            blocked = to_device_async(blocked_rows(list(edge_sets[start, mode, strict]), seq_len, start), self.device)
            tails.sort(key=lambda tail: (tail.first_layer, tail.prompt))
            self.run_in_batches(TailGroup(clean, blocked, start, mode, strict), tails, results)
        return results

    def run_in_batches(self, group: TailGroup, tails: Sequence[Tail], out: torch.Tensor) -> None:
        """``run_tails`` over batches of rows into ``out`` [slots, V]. With ``max_batch`` None on CUDA, the
        first batch (``DEFAULT_BATCH`` rows, present in every layer) measures the memory a row takes, unless
        ``row_estimate`` has it from a pass of a prompt of similar length, and batches are then as large as fit
        in 80 % of the free memory. A CUDA out-of-memory error halves the batch and retries it."""
        batch, done = self.max_batch or DEFAULT_BATCH, 0
        auto = self.max_batch is None and self.device.type == "cuda"
        seq_len = group.clean.stream[0].shape[1]
        shape = (seq_len - group.start, group.mode, group.strict)
        estimate = self.row_estimate(shape, seq_len) if auto else None
        if estimate is not None:
            batch = self.rows_fitting(estimate)
        while done < len(tails):
            chunk = tails[done : done + batch]
            sizing = auto and estimate is None
            try:
                if sizing:  # the allocator counts on the host as kernels are queued: no need to wait for them
                    torch.cuda.reset_peak_memory_stats(self.device)
                    before = torch.cuda.memory_allocated(self.device)
                slots = to_device_async(torch.tensor([tail.slot for tail in chunk]), self.device)
                out[slots] = self.run_tails(group, chunk)
                if sizing:
                    estimate = (torch.cuda.max_memory_allocated(self.device) - before) / len(chunk)
                    self.row_bytes.setdefault(shape, {})[seq_len] = estimate
                    batch = max(len(chunk), self.rows_fitting(estimate))  # this pass did fit
            except torch.cuda.OutOfMemoryError:
                if batch == 1:
                    raise
                batch = max(1, batch // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if auto:  # later passes of this shape start from the lowered size
                    estimate = 0.8 * self.free_memory() / batch
                    self.row_bytes[shape] = {seq_len: estimate}
                warnings.warn(f"CUDA out of memory: knockout batch size lowered to {batch}", stacklevel=2)
                continue
            done += len(chunk)

    def row_estimate(self, shape: tuple[int, KnockoutMode, bool], seq_len: int) -> float | None:
        """Bytes a tail row of ``shape`` (positions computed, mode, strictness) takes on a prompt of ``seq_len``
        tokens, from a row measured on a prompt of T' tokens within a factor ``ROW_ESTIMATE_RANGE``: times
        max(1, seq_len / T'), an upper bound, since a row's memory is a + b T (its edges, its prompt's prefix,
        hidden attention over T sources); the least such bound. None: no length measured close enough."""
        measured = self.row_bytes.get(shape, {})
        bounds = [
            row_bytes * max(1.0, seq_len / length)
            for length, row_bytes in measured.items()
            if length / ROW_ESTIMATE_RANGE <= seq_len <= length * ROW_ESTIMATE_RANGE
        ]
        return min(bounds, default=None)

    def free_memory(self) -> int:
        """Bytes the GPU can still give: free on the device plus what torch holds cached but unused."""
        free, _ = torch.cuda.mem_get_info(self.device)
        return free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)

    def rows_fitting(self, row_bytes: float) -> int:
        """Tail rows of ``row_bytes`` each that fit in 80 % of the free GPU memory (at least one)."""
        return max(1, int(0.8 * self.free_memory() / max(row_bytes, 1.0)))

    def run_tails(self, group: TailGroup, tails: Sequence[Tail]) -> torch.Tensor:
        """Next-token probabilities [len(tails), V] of knockouts of ``group``; ``tails`` sorted by first layer.
        Each joins the batch at its first layer with its prompt's clean stream there."""
        plan, start = TailPlan.of(self, group.blocked, tails), group.start

        def mixing(layer: int, mixer: TokenMixer, prefix: Any, tail: Any, rows: TailRows) -> torch.Tensor:
            layer_rows = plan.layer_rows(layer, len(rows), group.mode, group.strict)
            return tail_mixing(mixer, prefix, tail, layer_rows, start, rows)

        def mlp_cut(layer: int, n_rows: int, lookback: int) -> torch.Tensor | None:
            return plan.layer_rows(layer, n_rows, group.mode, group.strict).mlp_cut(lookback)

        prompts, first_layers = [tail.prompt for tail in tails], [tail.first_layer for tail in tails]
        return run_tail_rows(self.model, group.clean, start, prompts, first_layers, mixing, mlp_cut=mlp_cut)

    def exempt_mask(self, layer: int, selection: FeatureSelection) -> torch.Tensor | None:
        key = (layer, selection)
        if key not in self.exempt_masks:
            self.exempt_masks[key] = exempt_features(self.model, layer, selection)
        return self.exempt_masks[key]


@dataclass(frozen=True)
class TailPlan:
    """What each layer does to the rows of one tail pass, as device tensors built once per pass."""

    engine: FastEngine
    blocked: torch.Tensor  # bool [A, T - start, T]: each row's edges (target rows start..T-1)
    in_layer: torch.Tensor  # bool [L, A]: the row knocks out layer l
    knocked_layers: frozenset[int]  # layers some row knocks out
    selections: tuple[FeatureSelection, ...]  # the distinct feature selections that exempt features
    selection: torch.Tensor | None  # long [A]: 1 + the row's index in ``selections``, 0 for none exempt

    @classmethod
    def of(cls, engine: FastEngine, blocked: torch.Tensor, tails: Sequence[Tail]) -> TailPlan:
        """The plan of ``tails``, whose edge sets index ``blocked`` [E, T - start, T]."""
        device = engine.device
        # [L, S]: the distinct layer sets S (a sweep has a few windows), then [L, A] by each row's set
        layer_sets: dict[frozenset[int], int] = {}
        set_of_row = [layer_sets.setdefault(tail.layers, len(layer_sets)) for tail in tails]
        in_set = torch.zeros(engine.model.n_layers, len(layer_sets), dtype=torch.bool)
        for column, layers in enumerate(layer_sets):
            in_set[list(layers), column] = True
        in_layer = in_set[:, torch.tensor(set_of_row)]
        exempting = [tail.features for tail in tails if tail.features.exempts_some]
        selections = tuple(dict.fromkeys(exempting))
        selection = None
        if selections:
            index = {s: i + 1 for i, s in enumerate(selections)}
            selection = to_device_async(torch.tensor([index.get(tail.features, 0) for tail in tails]), device)
        return cls(
            engine=engine,
            blocked=blocked[to_device_async(torch.tensor([tail.edges for tail in tails]), device)],
            in_layer=to_device_async(in_layer, device),
            knocked_layers=frozenset().union(*layer_sets),
            selections=selections,
            selection=selection,
        )

    def layer_rows(self, layer: int, n_rows: int, mode: KnockoutMode, strict: bool) -> LayerRows:
        """Layer ``layer``'s view of the first ``n_rows`` rows: a row whose window misses the layer blocks
        nothing there; a layer no row knocks out mixes as the clean run does (zero-attention)."""
        knocked = self.in_layer[layer, :n_rows]  # [A]
        blocked = self.blocked[:n_rows]
        if layer not in self.knocked_layers:
            return LayerRows(torch.zeros_like(blocked), None, KnockoutMode.ZERO_ATTENTION, False)
        blocked = blocked & knocked[:, None, None]
        if self.selection is None:
            return LayerRows(blocked, None, mode, strict)
        n_features = self.engine.model.mixer(layer).n_features
        none_exempt = torch.zeros(n_features, dtype=torch.bool, device=blocked.device)
        masks = [self.engine.exempt_mask(layer, selection) for selection in self.selections]
        table = torch.stack([none_exempt, *(none_exempt if m is None else m for m in masks)])  # [1 + U, F]
        return LayerRows(blocked, table[self.selection[:n_rows] * knocked], mode, strict)
