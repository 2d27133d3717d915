"""Which token mixers a knockout reaches (``--mixers``): every layer, the attention, the recurrence, or some kinds.

In a hybrid (Mamba or Gated DeltaNet layers next to attention layers) the question is which path carries a fact
to the last token: ``attention`` blocks the edges in the attention layers only (the recurrent layers of the window
mix as in the clean run), ``recurrent`` in the recurrent layers only. Windows stay windows of depth over all
layers, so the three curves (all, attention, recurrent) share their x axis. In a parallel hybrid (Falcon-H1, both
branches in every layer) the restriction picks the branch. Torch-free: the command line parses it without torch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from infoflow.models.modes import MixerKind

if TYPE_CHECKING:
    from infoflow.models.base import CausalLM


class MixerGroup(StrEnum):
    ALL = "all"  # every layer: the plain knockout
    ATTENTION = "attention"  # softmax attention layers (and the attention branch of a parallel hybrid)
    RECURRENT = "recurrent"  # every recurrent kind: Mamba-1/2, Gated DeltaNet, RG-LRU, ...


ALIASES = {"ssm": MixerGroup.RECURRENT.value}
# Which of a model's mixer kinds a group reaches (``all`` reaches every kind: no restriction).
GROUP_KINDS = {
    MixerGroup.ATTENTION: lambda kind: kind is MixerKind.ATTENTION,
    MixerGroup.RECURRENT: lambda kind: kind.is_recurrent,
}
LABELS = {
    MixerGroup.ALL.value: "all layers",
    MixerGroup.ATTENTION.value: "through attention",
    MixerGroup.RECURRENT.value: "through the recurrence",
}


def accepted() -> str:
    kinds = [kind.value for kind in MixerKind if kind not in (MixerKind.NONE, MixerKind.PARALLEL)]
    return f"all, attention, recurrent (or ssm), or mixer kinds separated by commas ({', '.join(kinds)})"


@dataclass(frozen=True)
class Mixers:
    """``--mixers``: a group (all, attention, recurrent; ``ssm`` is another name for recurrent) or concrete mixer
    kinds separated by commas (``ssd,gated_delta``). ``value`` is kept in canonical form (kinds sorted), the form
    recorded in a run's parameters."""

    value: str = MixerGroup.ALL.value

    def __post_init__(self) -> None:
        text = self.value.strip().lower()
        text = ALIASES.get(text, text)
        if text not in set(MixerGroup):
            names = sorted({part.strip() for part in text.split(",") if part.strip()})
            unknown = [name for name in names if name not in set(MixerKind) or name in ("none", "parallel")]
            if unknown or not names:
                raise ValueError(f"unknown --mixers value {self.value!r}; accepted: {accepted()}")
            text = ",".join(names)
        object.__setattr__(self, "value", text)

    @property
    def restricts(self) -> bool:
        """Whether the knockout reaches only some mixers (anything but ``all``)."""
        return self.value != MixerGroup.ALL.value

    @property
    def label(self) -> str:
        """What the knockout goes through, for legends: "all layers", "through attention", ..."""
        return LABELS.get(self.value, f"through the {self.value.replace(',', ' and ')} layers")

    def kinds(self, present: Collection[MixerKind], model: str = "the model") -> frozenset[MixerKind] | None:
        """The kinds of ``present`` (a model's feature kinds) a knockout is restricted to; None for ``all``.

        A ``ValueError`` when the model (``model`` describes it in the message) has none of a group's kinds, or
        lacks a kind named explicitly."""
        if not self.restricts:
            return None
        if self.value in set(MixerGroup):
            chosen = frozenset(kind for kind in present if GROUP_KINDS[MixerGroup(self.value)](kind))
            missing = [] if chosen else [self.value]
        else:
            chosen = frozenset(MixerKind(name) for name in self.value.split(","))
            missing = sorted(kind.value for kind in chosen - set(present))
        if missing:
            own = sorted(
                {g.value for g in GROUP_KINDS if any(GROUP_KINDS[g](k) for k in present)}
                | {k.value for k in present if k is not MixerKind.NONE}
            )
            raise ValueError(
                f"--mixers {self.value}: {model} has no {', '.join(missing)} layers; "
                f"use --mixers all or one of {', '.join(own)}"
            )
        return chosen


def model_kinds(model: CausalLM) -> set[MixerKind]:
    """The kinds of the features of ``model``'s layers (a parallel hybrid's layers have features of two kinds)."""
    return {kind for layer in range(model.n_layers) for kind, _ in model.mixer(layer).feature_kinds()}


def is_hybrid(model: CausalLM) -> bool:
    """Attention and a recurrence in one model: its flow splits into "through attention" and "through the
    recurrence"."""
    kinds = model_kinds(model)
    return MixerKind.ATTENTION in kinds and any(kind.is_recurrent for kind in kinds)


def mixer_kinds(model: CausalLM, mixers: Mixers) -> frozenset[MixerKind] | None:
    """The kinds of ``model`` that ``mixers`` reaches (None: all); a ``ValueError`` naming the model's layers if it
    has none of them."""
    counts = Counter(kind.value for kind in model.layer_kinds)
    layers = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    return mixers.kinds(model_kinds(model), f"this {model.family} model ({layers} layers)")
