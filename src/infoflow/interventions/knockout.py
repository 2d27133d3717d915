"""What a knockout blocks: edges (t, s) in a set of layers, the SSM mode, and which features are exempt.

Pair semantics everywhere: ``(t, s)`` means "position t may not receive information from position s".
Only ``s <= t`` can carry information in a causal model; pairs with ``s > t`` are accepted and block
nothing (experiments build ``targets x sources`` products that contain such pairs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from infoflow.models.modes import KnockoutMode, MixerKind

if TYPE_CHECKING:  # torch is imported where a tensor is made, so that the command line starts without it
    import torch

__all__ = ["FeatureCategory", "FeatureSelection", "Knockout", "KnockoutMode", "window", "window_starts"]


class FeatureCategory(StrEnum):
    """Which features of the recurrent layers a knockout leaves untouched (reference semantics, named by what is
    *exempt*); attention heads are not ranked, and a category exempts none of them.

    Features are ranked per layer by their decay norm (``TokenMixer.decay_norms``; Mamba's is
    ``sum_n exp(-exp(A_log))``, the decay at Delta = 1): a large norm decays slowly (long memory), a small one fast.
    """

    ALL = "all"  # nothing exempt: every feature is knocked out
    FAST_DECAY = "fast_decay"  # fastest-decaying fraction exempt => slow-decay ("context-dependent") knocked
    SLOW_DECAY = "slow_decay"  # slowest-decaying fraction exempt => fast-decay ("context-independent") knocked

    @property
    def knocked_out_description(self) -> str:
        return {
            FeatureCategory.ALL: "all features",
            FeatureCategory.FAST_DECAY: "context-dependent (slow-decay) features",
            FeatureCategory.SLOW_DECAY: "context-independent (fast-decay) features",
        }[self]


@dataclass(frozen=True)
class FeatureSelection:
    """Which features of each knocked layer stay untouched.

    ``exempt_fraction`` of the features (rounded down, reference: one third) are exempt; the rest are
    knocked out. ``FeatureCategory.ALL`` exempts nothing whatever the fraction.

    ``kinds`` (None: every kind) restricts the knockout to the features of those mixer kinds; the others are
    exempt. In a parallel hybrid (Falcon-H1) ``{MixerKind.ATTENTION}`` blocks the edges in the attention branch
    only and ``{MixerKind.SSD}`` in the state-space branch only; elsewhere it leaves whole layers untouched.
    """

    category: FeatureCategory = FeatureCategory.ALL
    exempt_fraction: float = 1 / 3
    kinds: frozenset[MixerKind] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.exempt_fraction <= 1.0:
            raise ValueError(f"exempt_fraction must be in [0, 1], got {self.exempt_fraction}")
        if self.kinds is not None:
            if not self.kinds:
                raise ValueError("kinds must name at least one mixer kind (or be None for every kind)")
            object.__setattr__(self, "kinds", frozenset(MixerKind(kind) for kind in self.kinds))

    @property
    def exempts_some(self) -> bool:
        """Some features may be exempt (a decay category or a restriction to some mixer kinds)."""
        return self.category is not FeatureCategory.ALL or self.kinds is not None

    def exempt_mask(self, decay_norms: torch.Tensor) -> torch.Tensor | None:
        """Bool [F], True = exempt, from per-feature decay norms [F]; None when nothing is exempt."""
        import torch

        if self.category is FeatureCategory.ALL:
            return None
        n_features = decay_norms.shape[0]
        n_exempt = int(n_features * self.exempt_fraction)
        # reference: argsort ascending (fast decay first) for FAST_DECAY, descending for SLOW_DECAY
        order = torch.argsort(decay_norms, descending=self.category is FeatureCategory.SLOW_DECAY, stable=True)
        mask = torch.zeros(n_features, dtype=torch.bool, device=decay_norms.device)
        mask[order[:n_exempt]] = True
        return mask


@dataclass(frozen=True)
class Knockout:
    """Edges blocked in a set of layers.

    ``edges`` is a tuple of ``(t, s)`` pairs; build the usual ``targets x sources`` product with
    :meth:`between`. ``strict`` also removes the blocked sources from the conv or token shift in front of a recurrence
    (Mamba's conv1d; the reference leaves it, and so a short-range leak, in place).
    """

    edges: tuple[tuple[int, int], ...]
    layers: tuple[int, ...]
    mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION
    strict: bool = False
    features: FeatureSelection = field(default_factory=FeatureSelection)

    def __post_init__(self) -> None:
        for t, s in self.edges:
            if t < 0 or s < 0:
                raise ValueError(f"edge positions must be >= 0, got ({t}, {s})")
        if any(layer < 0 for layer in self.layers):
            raise ValueError(f"layers must be >= 0, got {self.layers}")

    @classmethod
    def between(
        cls,
        targets: Iterable[int],
        sources: Iterable[int],
        layers: Iterable[int],
        **options: object,
    ) -> Knockout:
        """Block every ``target <- source`` edge (the product) in every given layer."""
        sources = tuple(sources)
        edges = tuple((t, s) for t in targets for s in sources)
        return cls(edges=edges, layers=tuple(sorted(set(layers))), **options)  # type: ignore[arg-type]

    @property
    def first_target(self) -> int | None:
        """The earliest position whose output a knockout can change (None when nothing is blocked)."""
        causal = [t for t, s in self.edges if s <= t]
        return min(causal) if causal else None

    def check_in_prompt(self, seq_len: int) -> None:
        """A ``ValueError`` where an edge lies outside a prompt of ``seq_len`` tokens."""
        out_of_range = [(t, s) for t, s in self.edges if t >= seq_len or s >= seq_len]
        if out_of_range:
            raise ValueError(f"edges {out_of_range[:3]} lie outside a prompt of {seq_len} tokens")

    def blocked_matrix(self, seq_len: int, device: torch.device | str = "cpu", first_row: int = 0) -> torch.Tensor:
        """Bool [T - first_row, T]: ``blocked[t - first_row, s]`` for the causal edges (s <= t) of this knockout,
        target rows ``first_row..T-1`` (edges of earlier targets left out)."""
        import torch

        self.check_in_prompt(seq_len)
        blocked = torch.zeros(seq_len - first_row, seq_len, dtype=torch.bool, device=device)
        kept = [(t - first_row, s) for t, s in self.edges if t >= first_row]
        if kept:
            t, s = torch.tensor(kept, device=device).T
            blocked[t, s] = True
        targets = torch.arange(first_row, seq_len, device=device)[:, None]  # [T - first_row, 1]
        return blocked & (torch.arange(seq_len, device=device)[None, :] <= targets)


def window(start: int, size: int, n_layers: int) -> tuple[int, ...]:
    """Layers ``[start, start + size)`` of a model with ``n_layers`` layers."""
    if size < 1:
        raise ValueError(f"window size must be >= 1, got {size}")
    if size > n_layers:
        raise ValueError(f"window size {size} is larger than the model's {n_layers} layers")
    if not 0 <= start <= n_layers - size:
        raise ValueError(f"window start {start} out of range 0..{n_layers - size} for size {size}")
    return tuple(range(start, start + size))


def window_starts(size: int, n_layers: int) -> Sequence[int]:
    """Start-aligned windows ``l = 0 .. L - w`` (DESIGN §1)."""
    window(0, size, n_layers)  # validates size
    return range(n_layers - size + 1)


PAPER_WINDOW_SIZE = 9


def default_window_size(n_layers: int) -> int:
    """The paper's window of 9 layers, or half the depth for models of fewer than 18 layers."""
    return min(PAPER_WINDOW_SIZE, max(1, n_layers // 2))
