"""Memory a prompt needs, predicted from its length and the model's shapes, and the memory there is.

The predictions are upper bounds of what the engines hold at their peak (checked against measured peaks in
``tests/test_reliability_memory.py``), in bytes:

- the clean pass of P prompts of T tokens: the residual stream of every layer (L + 1) P T D, every layer's
  prepared mixer inputs (measured per token on a two- and a four-token probe), the widest projection of a
  layer (the MLP's hidden layer), and the clean mixing of the costliest layer (``mixing_bytes``);
- a fast-engine tail pass of A rows over R = T - start positions: the rows' stream and projections, their
  blocked edges [A, R, T], and their knocked mixing: a decode step for target = last (Mamba-1: the sources'
  state contributions [P, T, Di, N]; otherwise each row's joined prefix), else the hidden attention [A, F, R, T]
  (Mamba-1: times N, the decays of every state);
- next-token probabilities [K, V] of every knockout.

A ``SLACK`` factor and ``BASE`` bytes cover what the sums leave out (allocator rounding, small temporaries).
"""

from __future__ import annotations

import math
import os
import resource
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from infoflow.engines.base import Engine
from infoflow.engines.fast import DEFAULT_BATCH
from infoflow.interventions.knockout import Knockout
from infoflow.models.base import CausalLM, TokenMixer
from infoflow.models.modes import KnockoutMode, MixerKind

FP32 = 4
SLACK = 1.5  # predictions are sums of the big tensors; torch's temporaries and the allocator add to them
BASE = 64 * 2**20  # bytes: small tensors, Python objects and the allocator's own memory during a chunk
DECODE_COPIES = 3  # Mamba-1's decode step: decays, inputs and contributions [P, T, Di, N] alive at once
TERMS_COPIES = 8  # the hidden attention: segment sums (masked, flipped, summed, shifted), their exp, the einsum


@dataclass(frozen=True)
class TailShape:
    """Knockouts of one prompt that share a tail: their count, first target and whether they are a decode step
    (zero-attention, not strict, target = last)."""

    count: int
    start: int
    decode: bool


def gigabytes(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GB" if n_bytes >= 2**30 / 10 else f"{n_bytes / 2**20:.0f} MB"


def host_available() -> int | None:
    """Bytes this process can still allocate on the host: the least of the kernel's MemAvailable, the headroom
    of the process's cgroup (v2 or v1) and of its address-space limit (RLIMIT_AS); None where none is known."""
    limits = [meminfo_available(), cgroup_headroom(), address_space_headroom()]
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


def meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cgroup_headroom() -> int | None:
    """The limit less the usage of this process's memory cgroup (v2: memory.max/current; v1: limit/usage)."""
    for limit_name, usage_name in (
        ("memory.max", "memory.current"),
        ("memory.limit_in_bytes", "memory.usage_in_bytes"),
    ):
        for folder in cgroup_folders():
            try:
                limit = (folder / limit_name).read_text().strip()
                usage = int((folder / usage_name).read_text().strip())
            except (OSError, ValueError):
                continue
            if limit.isdigit() and int(limit) < 2**60:  # v2 writes "max", v1 a huge number, where unlimited
                return max(0, int(limit) - usage)
    return None


def cgroup_folders() -> Iterable[Path]:
    """The folders of this process's cgroups (v2 unified, then v1's memory controller)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    folders = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            folders.append(Path("/sys/fs/cgroup") / path.lstrip("/"))
        elif "memory" in controllers.split(","):
            folders.append(Path("/sys/fs/cgroup/memory") / path.lstrip("/"))
    return folders


def address_space_headroom() -> int | None:
    """RLIMIT_AS less the address space in use (VmSize), where the process has such a limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        status = Path(f"/proc/{os.getpid()}/status").read_text()
    except OSError:
        return None
    size = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:")), 0)
    return max(0, soft - size)


def available(device: torch.device) -> int | None:
    """Bytes free for a chunk's work on ``device``: the GPU's free memory plus what torch caches unused, or the
    host's (``host_available``)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return host_available() if device.type == "cpu" else None


class MemoryModel:
    """Predicts the bytes of a model's clean passes, knockout tails and hidden-attention exports."""

    def __init__(self, model: CausalLM) -> None:
        self.model = model
        self.width = model.lm_head.in_features  # D
        self.vocab = model.lm_head.out_features  # V
        self.element = model.lm_head.weight.element_size()
        self.prepared = [self.prepared_bytes(layer) for layer in range(model.n_layers)]  # (per token, constant)
        self.widest = [widest_projection(model.block(layer)) for layer in range(model.n_layers)]

    @torch.no_grad()
    def prepared_bytes(self, layer: int) -> tuple[float, float]:
        """(bytes per token, bytes besides) of a layer's prepared mixer inputs, from probes of 2 and 4 tokens."""
        block = self.model.block(layer)
        weight = self.model.lm_head.weight
        sizes = []
        for tokens in (2, 4):
            prepared = block.mixer_inputs(torch.zeros(1, tokens, self.width, dtype=weight.dtype, device=weight.device))
            sizes.append(sum(v.nbytes for v in vars(prepared).values() if isinstance(v, torch.Tensor)))
        per_token = max(0.0, (sizes[1] - sizes[0]) / 2)
        return per_token, max(0.0, sizes[0] - 2 * per_token)

    def stream_bytes(self, batch: int, seq_len: int) -> float:
        """The residual stream of every layer and the prepared inputs of every layer, kept by a clean pass."""
        stream = (self.model.n_layers + 1) * batch * seq_len * self.width * self.element
        return stream + sum(batch * (seq_len * per_token + constant) for per_token, constant in self.prepared)

    def layer_work(self, layer: int, rows: int, prompts: int, positions: int, seq_len: int, decode: bool) -> float:
        """The transient peak of one tail layer step of ``rows`` rows (of ``prompts`` prompts) at ``positions``
        positions of ``seq_len``: the widest projection and the knocked mixing."""
        projections = 3 * rows * positions * self.widest[layer] * FP32
        mixer = self.model.mixer(layer)
        return projections + mixing_bytes(mixer, rows, prompts, positions, seq_len, decode, self.prepared[layer])

    def clean_bytes(self, batch: int, seq_len: int, logits_everywhere: bool = False) -> float:
        """A clean pass of ``batch`` prompts of ``seq_len`` tokens: all it keeps, and its costliest layer step.
        ``logits_everywhere``: logits at every position (``evaluate``), not at the last only."""
        work = max(self.clean_layer(layer, batch, seq_len) for layer in range(self.model.n_layers))
        logits = 2 * batch * (seq_len if logits_everywhere else 1) * self.vocab * FP32
        return self.stream_bytes(batch, seq_len) + work + logits

    def clean_layer(self, layer: int, batch: int, seq_len: int) -> float:
        projections = 3 * batch * seq_len * self.widest[layer] * FP32
        return projections + clean_mixing_bytes(self.model.mixer(layer), batch, seq_len)

    def knockout_bytes(self, seq_len: int, prompts: Sequence[Sequence[TailShape]], max_rows: int) -> float:
        """Fast engine: one clean pass of the prompts (one length) and their tail passes of up to ``max_rows``
        rows, the costliest tail pass alive at once with every knockout's probabilities."""
        batch = len(prompts)
        knockouts = sum(shape.count for shapes in prompts for shape in shapes) + batch
        distinct = {shape for shapes in prompts for shape in shapes}  # prompts of a sweep share their tail shapes
        tails = [self.tail_bytes(seq_len, shape, batch, max_rows) for shape in distinct]
        results = 2 * knockouts * self.vocab * FP32
        return self.clean_bytes(batch, seq_len) + max(tails, default=0.0) + results

    def tail_bytes(self, seq_len: int, shape: TailShape, batch: int, max_rows: int) -> float:
        """One tail pass: ``rows`` rows (of ``batch`` prompts) over positions start..T-1."""
        rows, positions = min(max_rows, shape.count * batch), seq_len - shape.start
        stream = 4 * rows * positions * self.width * FP32  # the rows' hidden states, normed and joined
        edges = 3 * rows * positions * seq_len  # bool [A, R, T]: blocked, per layer, and per knocked layer
        work = max(
            self.layer_work(layer, rows, batch, positions, seq_len, shape.decode)
            for layer in range(self.model.n_layers)
        )
        return stream + edges + work + 2 * rows * self.vocab * FP32

    def reference_bytes(self, seq_len: int, rows: int) -> float:
        """Reference engine: one full pass per knockout whose ``rows`` target rows get each their hidden
        attention over every position."""
        work = max(
            terms_bytes(self.model.mixer(layer), max(rows, 1), seq_len, seq_len) for layer in range(self.model.n_layers)
        )
        return self.clean_bytes(1, seq_len, logits_everywhere=True) + work

    def attention_bytes(self, seq_len: int, layers: int, per_feature: bool) -> float:
        """Hidden-attention export of one prompt: a clean pass, one layer's hidden attention, and every chosen
        layer's matrices as stored rows (Python floats, 32 bytes each, then Arrow's copy)."""
        features = max(self.model.mixer(layer).n_features for layer in range(self.model.n_layers))
        matrices = layers * (1 + (features if per_feature else 0)) * seq_len**2 * (32 + 8)
        terms = max(terms_bytes(self.model.mixer(layer), 1, seq_len, seq_len) for layer in range(self.model.n_layers))
        return self.clean_bytes(1, seq_len) + terms + matrices

    @staticmethod
    def total(n_bytes: float) -> int:
        """A prediction with its slack."""
        return int(SLACK * n_bytes + BASE)


def widest_projection(block: nn.Module) -> int:
    """The most outputs of a linear layer of the block (the MLP's hidden layer, the mixer's input projection)."""
    return max((m.out_features for m in block.modules() if isinstance(m, nn.Linear)), default=0)


def state_size(mixer: TokenMixer) -> int:
    """N where the mixer's hidden attention carries a decay per state (Mamba-1's [B, Di, N, R, T]), else 1."""
    return int(getattr(mixer, "d_state", 1)) if mixer.kind is MixerKind.SELECTIVE_SCAN else 1


def terms_bytes(mixer: TokenMixer, batch: int, rows: int, seq_len: int) -> float:
    """The materialised hidden attention of ``rows`` target rows: [B, F, N, R, T] segment sums and decays
    (N = 1 but for Mamba-1), and the matrix [B, F, R, T]."""
    return TERMS_COPIES * batch * mixer.n_features * state_size(mixer) * rows * seq_len * FP32


def mixing_bytes(
    mixer: TokenMixer,
    rows: int,
    prompts: int,
    positions: int,
    seq_len: int,
    decode: bool,
    prepared: tuple[float, float],
) -> float:
    """Knocked mixing of ``rows`` tail rows of ``prompts`` prompts at ``positions`` positions (a decode step:
    the last one only); exempt features mix twice (clean and knocked), hence the factor 2."""
    if not decode:
        return 2 * terms_bytes(mixer, rows, positions, seq_len)
    states = mixer.n_features * state_size(mixer)
    if mixer.kind is MixerKind.SELECTIVE_SCAN:  # the sources' contributions [P, T, Di, N], the rows' [P, M, Di, N]
        padded = rows + prompts  # P M, the rows in the padded layout
        return (DECODE_COPIES * prompts * seq_len + 2 * padded) * states * FP32 + padded * seq_len * FP32
    joined = rows * (seq_len * prepared[0] + prepared[1])  # each row's prefix joined to its last position
    return 2 * (joined + terms_bytes(mixer, rows, 1, seq_len))


def clean_mixing_bytes(mixer: TokenMixer, batch: int, seq_len: int) -> float:
    """The clean mixing of ``batch`` prompts: Mamba-1's scan (decays and inputs of ``SCAN_CHUNK`` steps and the
    outputs), Mamba-2's chunked SSD (quadratic within a chunk), attention's T x T scores; other mixers as
    their hidden attention (an upper bound)."""
    from infoflow.models.mamba1 import SCAN_CHUNK

    features = mixer.n_features
    if mixer.kind is MixerKind.SELECTIVE_SCAN:
        scan = 2 * min(seq_len, SCAN_CHUNK) * features * state_size(mixer)
        return batch * (scan + 3 * seq_len * features) * FP32
    if mixer.kind is MixerKind.SSD:
        chunk = min(int(getattr(mixer, "chunk_size", seq_len)), seq_len)
        n_chunks = math.ceil(seq_len / chunk)
        head_dim, n_state = int(getattr(mixer, "head_dim", 1)), int(getattr(mixer, "d_state", 1))
        within = 4 * n_chunks * chunk * chunk * features
        states = 4 * (n_chunks + 1) * features * head_dim * n_state + n_chunks**2 * features
        return batch * (within + states + 4 * seq_len * features * (head_dim + n_state)) * FP32
    if mixer.kind is MixerKind.ATTENTION:
        return 3 * batch * features * seq_len * seq_len * FP32
    return terms_bytes(mixer, batch, seq_len, seq_len)


def knockout_shapes(knockouts: Iterable[Knockout | None]) -> list[TailShape]:
    """The tails the fast engine runs for one prompt's knockouts (the clean run, None, has none)."""
    from collections import Counter

    counts: Counter[tuple[int, bool]] = Counter()
    for knockout in knockouts:
        if knockout is not None and knockout.first_target is not None and knockout.layers:
            simple = knockout.mode is KnockoutMode.ZERO_ATTENTION and not knockout.strict
            counts[knockout.first_target, simple] += 1
    return [TailShape(count, start, simple) for (start, simple), count in counts.items()]


def knockouts_need(engine: Engine, requests: Sequence[tuple[int, Sequence[Knockout | None]]]) -> int:
    """Predicted peak bytes of ``engine`` scoring the knockouts of prompts given as (length, knockouts): the
    costliest clean batch (the fast engine batches prompts of one length) or knockout (the reference engine)."""
    memory = memory_model(engine.model)
    if engine.name == "reference":
        rows = [
            max((len({t for t, s in k.edges if s <= t}) for k in knockouts if k is not None), default=0)
            for _, knockouts in requests
        ]
        return MemoryModel.total(max(memory.reference_bytes(n, r) for (n, _), r in zip(requests, rows, strict=True)))
    by_length: dict[int, list[list[TailShape]]] = {}
    for seq_len, knockouts in requests:
        by_length.setdefault(seq_len, []).append(knockout_shapes(knockouts))
    max_prompts = int(getattr(engine, "max_prompts", 1))
    max_batch = getattr(engine, "max_batch", None)
    # on a GPU without a set batch the engine sizes tail passes to the free memory, down to one row
    max_rows = int(max_batch or (1 if engine.device.type == "cuda" else DEFAULT_BATCH))
    need = max(
        memory.knockout_bytes(seq_len, shapes[first : first + max_prompts], max_rows)
        for seq_len, shapes in by_length.items()
        for first in range(0, len(shapes), max_prompts)
    )
    return MemoryModel.total(need)


MODELS: weakref.WeakKeyDictionary[CausalLM, MemoryModel] = weakref.WeakKeyDictionary()


def memory_model(model: CausalLM) -> MemoryModel:
    """The memory model of ``model`` (probed once per model)."""
    if model not in MODELS:
        MODELS[model] = MemoryModel(model)
    return MODELS[model]
