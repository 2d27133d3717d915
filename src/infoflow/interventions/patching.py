"""Sublayer knockout and activation patching, as data and as the layers see them.

A :class:`Patch` replaces the value at one :class:`Site` of a layer step (the mixer's update, the MLP's update,
the layer's output) in a window of layers, at some positions: by zero, the sublayer knockout of Geva et al.
(2023, §5), or, with ``restore``, by its value on the clean run, the restoration of causal tracing (Meng et
al. 2022) on a run whose subject embeddings a :class:`Corruption` has noised.

A patch whose first layer is l0 and first position p leaves layers < l0 and positions < p as they were, which
is what lets the fast engine reuse the unpatched run's prefix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from infoflow.interventions.sites import check_sites, parse_site
from infoflow.models.base import CausalLM, LayerIntervention
from infoflow.models.modes import Site

__all__ = [
    "Corruption",
    "Patch",
    "Site",
    "SitePatch",
    "SiteRecorder",
    "SubjectSwap",
    "check_patch",
    "check_sites",
    "layer_patches",
    "parse_site",
]


@dataclass(frozen=True)
class Patch:
    """Replace the value at ``site`` in ``layers`` at ``positions``: by zero, or with ``restore`` by the clean
    run's value there."""

    site: Site
    layers: tuple[int, ...]
    positions: tuple[int, ...]
    restore: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "site", parse_site(self.site))
        object.__setattr__(self, "layers", tuple(sorted(set(self.layers))))
        object.__setattr__(self, "positions", tuple(sorted(set(self.positions))))
        if any(layer < 0 for layer in self.layers) or any(position < 0 for position in self.positions):
            raise ValueError(f"patch layers and positions must be >= 0, got {self.layers} and {self.positions}")

    @classmethod
    def knockout(cls, site: Site | str, layers: Iterable[int], positions: Iterable[int]) -> Patch:
        """Zero the ``site`` update in ``layers`` at ``positions`` (a sublayer knockout)."""
        return cls(parse_site(site), tuple(layers), tuple(positions))

    @classmethod
    def restoration(cls, site: Site | str, layers: Iterable[int], positions: Iterable[int]) -> Patch:
        """Restore the clean value of ``site`` in ``layers`` at ``positions`` (on a corrupted run)."""
        return cls(parse_site(site), tuple(layers), tuple(positions), restore=True)

    @property
    def changes_something(self) -> bool:
        return bool(self.layers and self.positions)


def check_patch(model: CausalLM, patch: Patch, seq_len: int) -> None:
    """A ``ValueError`` for layers the model lacks and positions outside a prompt of ``seq_len`` tokens."""
    bad_layers = [layer for layer in patch.layers if layer >= model.n_layers]
    if bad_layers:
        raise ValueError(f"layers {bad_layers} do not exist in a model with {model.n_layers} layers")
    bad_positions = [position for position in patch.positions if position >= seq_len]
    if bad_positions:
        raise ValueError(f"positions {bad_positions} lie outside a prompt of {seq_len} tokens")


@dataclass(frozen=True)
class SitePatch(LayerIntervention):
    """A patch as one layer sees it: ``value[b, t] = replacement[b, t] if mask[b, t]`` at ``site``."""

    site: Site
    mask: torch.Tensor  # bool [B, T] (or [1, T]): the positions whose value is replaced
    values: torch.Tensor | None = None  # [B, T, D]: what replaces them; None: zero

    def site_value(self, site: Site, value: torch.Tensor) -> torch.Tensor:
        if site is not self.site:
            return value
        replacement = value.new_zeros(()) if self.values is None else self.values.to(value.dtype)
        return torch.where(self.mask[..., None], replacement, value)

    def widened(self, before: int) -> SitePatch:
        """The same patch over ``before`` more leading positions, which it leaves unchanged."""
        mask = torch.nn.functional.pad(self.mask, (before, 0))  # [B, before + T]
        values = None if self.values is None else torch.nn.functional.pad(self.values, (0, 0, before, 0))
        return SitePatch(self.site, mask, values)


@dataclass(frozen=True)
class SiteRecorder(LayerIntervention):
    """Keeps the value at every site of the layer step it sees (and changes nothing)."""

    values: dict[Site, torch.Tensor] = field(default_factory=dict)

    def site_value(self, site: Site, value: torch.Tensor) -> torch.Tensor:
        self.values[site] = value
        return value


@dataclass(frozen=True)
class RecordedRun:
    """A run with its site values: ``stream`` as ``CausalLM.residual_stream``, ``sites[site][layer]`` [B, T, D]
    (absent where the layer has no such site: the MLP of a Mamba layer)."""

    stream: list[torch.Tensor]
    sites: dict[Site, dict[int, torch.Tensor]]


def record_sites(model: CausalLM, embedded: torch.Tensor) -> RecordedRun:
    """The run from the embeddings [B, T, D] with the value at every site of every layer."""
    recorders = {layer: SiteRecorder() for layer in range(model.n_layers)}
    stream = model.stream_from(embedded, dict(recorders))
    sites = {site: {layer: r.values[site] for layer, r in recorders.items() if site in r.values} for site in Site}
    return RecordedRun(stream, sites)


def layer_patches(
    model: CausalLM, patch: Patch | None, seq_len: int, clean: RecordedRun | None = None
) -> dict[int, SitePatch]:
    """The patch as each layer sees it (batch of one prompt); ``clean``: the clean run, which a restoring patch
    needs."""
    if patch is None or not patch.changes_something:
        return {}
    check_patch(model, patch, seq_len)
    device = model.lm_head.weight.device
    mask = torch.zeros(1, seq_len, dtype=torch.bool, device=device)
    mask[0, list(patch.positions)] = True
    if not patch.restore:
        return {layer: SitePatch(patch.site, mask) for layer in patch.layers}
    if clean is None:
        raise ValueError("a restoring patch needs the clean run's values")
    values = clean.sites[patch.site]
    return {layer: SitePatch(patch.site, mask, values[layer]) for layer in patch.layers if layer in values}


@dataclass(frozen=True)
class Corruption:
    """Gaussian noise of standard deviation ``std`` on the embeddings at ``positions`` (the subject), in
    ``samples`` draws seeded by ``seed``."""

    positions: tuple[int, ...]
    std: float
    samples: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"a corruption needs at least one noise sample, got {self.samples}")
        if self.std < 0:
            raise ValueError(f"the noise's standard deviation must be >= 0, got {self.std}")

    def noise(self, seq_len: int, width: int) -> torch.Tensor:
        """[S, T, D] fp32 on the CPU: N(0, std^2) at the corrupted positions, zero elsewhere; the same for the
        same seed whatever the device or dtype the model runs in."""
        generator = torch.Generator().manual_seed(self.seed)
        noise = torch.zeros(self.samples, seq_len, width)
        positions = list(self.positions)
        noise[:, positions] = self.std * torch.randn(self.samples, len(positions), width, generator=generator)
        return noise


@dataclass(frozen=True)
class SubjectSwap:
    """A counterfactual subject (the symmetric token replacement of Zhang & Nanda 2024): the tokens at
    ``positions`` (the subject) replaced by ``token_ids``, another subject of as many tokens."""

    positions: tuple[int, ...]
    token_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.positions) != len(self.token_ids):
            raise ValueError(f"a subject of {len(self.positions)} tokens cannot take {len(self.token_ids)} tokens")

    def offset(self, model: CausalLM, input_ids: torch.Tensor) -> torch.Tensor:
        """[1, T, D] fp32 on the CPU: embed(swapped ids) - embed(ids), which added to the prompt's embeddings
        gives the swapped prompt's (zero outside the subject)."""
        swapped = input_ids.clone()  # [T]
        swapped[list(self.positions)] = torch.tensor(self.token_ids, dtype=input_ids.dtype)
        device = model.lm_head.weight.device
        with torch.no_grad():
            both = model.embed(torch.stack([swapped, input_ids]).to(device)).float()  # [2, T, D]
        return (both[:1] - both[1:]).cpu()


def embedding_width(model: CausalLM) -> int:
    """D, the width of the model's embeddings (of its residual stream)."""
    device = model.lm_head.weight.device
    with torch.no_grad():
        return model.embed(torch.zeros(1, 1, dtype=torch.long, device=device)).shape[-1]


def embedding_std(model: CausalLM, token_ids: Iterable[int], chunk: int = 4096) -> float:
    """The standard deviation of the embedding entries of ``token_ids`` (each embedded alone, at position 0),
    the scale of causal tracing's noise (Meng et al.: over the subjects' tokens); ``chunk`` tokens at a time."""
    device = model.lm_head.weight.device
    ids = torch.tensor(sorted(set(token_ids)), dtype=torch.long)
    count, total, squares = 0, 0.0, 0.0
    with torch.no_grad():
        for part in ids.split(chunk):
            embedded = model.embed(part.to(device).view(-1, 1)).double()  # [N, 1, D]
            count, total, squares = (
                count + embedded.numel(),
                total + embedded.sum().item(),
                squares + embedded.square().sum().item(),
            )
    variance = (squares - total * total / count) / (count - 1)  # ddof 1, as torch.std
    return max(variance, 0.0) ** 0.5
