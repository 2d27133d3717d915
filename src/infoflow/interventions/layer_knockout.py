"""An edge knockout as the layers of a model see it: validation against the layers' capabilities, the
features each layer exempts, and the knocked-out mixing of one layer (the reference engine's path)."""

from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from infoflow.interventions.knockout import FeatureCategory, FeatureSelection, Knockout, KnockoutMode
from infoflow.models.base import CausalLM, LayerIntervention, TokenMixer, lookback_cut
from infoflow.models.modes import MixerKind
from infoflow.models.tails import repeat_batch


def check_knockout(model: CausalLM, knockout: Knockout) -> None:
    """A ``ValueError`` for layers the model lacks and for options none of its layers supports.

    Options that change how a recurrence removes an edge (a mode other than zero-attention, strict, feature
    categories) apply to the layers that support them; in a hybrid the other layers remove the edge plainly.
    """
    n_layers = model.n_layers
    if knockout.layers and max(knockout.layers) >= n_layers:
        bad_layers = [layer for layer in knockout.layers if layer >= n_layers]
        raise ValueError(f"layers {bad_layers} do not exist in a model with {n_layers} layers")
    # the options are checked once per model and combination: a sweep checks 10^5 knockouts of a few
    options = (knockout.mode, knockout.strict, knockout.features.category, knockout.features.kinds)
    checked = CHECKED_OPTIONS.setdefault(model, set())
    if options not in checked:
        check_options(model, knockout.mode, knockout.strict, (knockout.features.category,), knockout.features.kinds)
        checked.add(options)


# per model: the option combinations (mode, strict, category, kinds) its layers support
CHECKED_OPTIONS: weakref.WeakKeyDictionary[CausalLM, set[tuple[Any, ...]]] = weakref.WeakKeyDictionary()


def check_options(
    model: CausalLM,
    mode: KnockoutMode,
    strict: bool,
    categories: tuple[FeatureCategory, ...],
    kinds: frozenset[MixerKind] | None = None,
) -> None:
    """A ``ValueError`` naming the first of ``mode``, ``strict``, ``categories`` and ``kinds`` (mixer kinds a
    knockout is restricted to) that no layer supports."""
    mixers = [model.mixer(layer) for layer in range(model.n_layers)]
    if not any(mode in mixer.knockout_modes for mixer in mixers):
        supported = sorted({m.value for mixer in mixers for m in mixer.knockout_modes})
        raise ValueError(f"knockout mode {mode.value!r} {unsupported(model)}; its layers take {', '.join(supported)}")
    if strict and not any(mixer.supports_strict for mixer in mixers):
        raise ValueError(f"strict knockout (blocking the sources' conv and token-shift taps too) {unsupported(model)}")
    decaying = model.has_decay_features
    for category in categories:
        if category is not FeatureCategory.ALL and not decaying:
            raise ValueError(
                f"feature category {category.value!r} {unsupported(model)} (it ranks a recurrence's features by "
                "decay); use the category 'all'"
            )
    present = {kind for mixer in mixers for kind, _ in mixer.feature_kinds()}
    missing = sorted(set(kinds or ()) - present)
    if missing:
        raise ValueError(
            f"knockout restricted to mixer kinds {', '.join(missing)} that this {model.family} model lacks; "
            f"its features are of the kinds {', '.join(sorted(present))}"
        )


def unsupported(model: CausalLM) -> str:
    """Why an option does not apply: what the model's layers are (e.g. "12 attention layers")."""
    counts = Counter(kind.value for kind in model.layer_kinds)
    layers = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    return f"is supported by no layer of this {model.family} model ({layers} layers)"


def exempt_features(model: CausalLM, layer: int, selection: FeatureSelection) -> torch.Tensor | None:
    """Bool [F] of the features a knockout leaves untouched in ``layer`` (None: none exempt). Feature
    categories rank decaying features; a layer without them (attention in a hybrid) exempts none, and so do
    the attention heads of a parallel hybrid. Features of kinds outside ``selection.kinds`` are exempt."""
    mixer = model.mixer(layer)
    norms = mixer.decay_norms()
    by_decay = None if norms is None else selection.exempt_mask(norms)  # [features of recurrent kinds]
    runs = mixer.feature_kinds()
    if not selection.exempts_some or (selection.kinds is None and len(runs) == 1):
        return by_decay
    device = model.lm_head.weight.device  # a layer without mixing (NoMixer) has no parameters of its own
    parts, decaying = [], 0  # per run: its features' exemption; decaying: recurrent features seen so far
    for kind, count in runs:
        if selection.kinds is not None and kind not in selection.kinds:
            parts.append(torch.ones(count, dtype=torch.bool, device=device))
        elif by_decay is not None and kind.is_recurrent:
            parts.append(by_decay[decaying : decaying + count])
        else:
            parts.append(torch.zeros(count, dtype=torch.bool, device=device))
        decaying += count if kind.is_recurrent else 0
    return torch.cat(parts)


@dataclass(frozen=True)
class LayerKnockout(LayerIntervention):
    """A knockout as one layer sees it (applies to every prompt of the batch)."""

    blocked: torch.Tensor  # bool [T, T]; blocked[t, s]: t may not receive from s (only s <= t set)
    mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION
    strict: bool = False
    exempt: torch.Tensor | None = None  # bool [F]; True = feature untouched by the knockout

    def mixing(self, mixer: TokenMixer, prepared: Any, mixed: torch.Tensor) -> torch.Tensor:
        """Replace the rows of ``mixed`` [B, T, F, P] that have a blocked edge by their knocked-out values.

        Rows without a blocked edge keep their clean values bit for bit. Each target row r gets its own
        copy of the inputs in which only row r's edges are blocked (so zero-delta and strict, which change
        the sources themselves, affect row r alone).
        """
        rows = self.blocked.any(dim=-1).nonzero().squeeze(-1)  # [R] target positions
        if rows.numel() == 0:
            return mixed
        batch, n_rows = mixed.shape[0], rows.numel()
        single_row = torch.zeros(n_rows, *self.blocked.shape, dtype=torch.bool, device=self.blocked.device)
        single_row[torch.arange(n_rows), rows] = self.blocked[rows]  # [R, T, T]
        copies = repeat_batch(prepared, n_rows)  # [B*R, ...], prompt-major
        knocked = mixer.terms(copies, single_row.repeat(batch, 1, 1), self.mode, self.strict).mixed()
        knocked = knocked.unflatten(0, (batch, n_rows))[:, torch.arange(n_rows), rows]  # [B, R, F, P]
        if self.exempt is not None:
            exempt = self.exempt.view(1, 1, -1, 1)
            knocked = torch.where(exempt, mixed[:, rows], knocked)
        mixed = mixed.clone()
        mixed[:, rows] = knocked.to(mixed.dtype)
        return mixed

    def mlp_cut(self, lookback: int) -> torch.Tensor | None:
        """A strict knockout also cuts an MLP's look back along its blocked edges (unless every feature of the
        layer is exempt): [1, T, lookback]."""
        if not self.strict or (self.exempt is not None and bool(self.exempt.all())):
            return None
        return lookback_cut(self.blocked[None], lookback)


def layer_knockouts(model: CausalLM, knockout: Knockout | None, seq_len: int) -> dict[int, LayerKnockout]:
    """The knockout as each layer sees it; validated against the model and the prompt length."""
    if knockout is None:
        return {}
    check_knockout(model, knockout)
    blocked = knockout.blocked_matrix(seq_len, device=model.lm_head.weight.device)
    return {
        layer: LayerKnockout(
            blocked=blocked,
            mode=knockout.mode,
            strict=knockout.strict,
            exempt=exempt_features(model, layer, knockout.features),
        )
        for layer in knockout.layers
    }
