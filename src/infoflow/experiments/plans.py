"""What the knockout experiments share: how edges are knocked out, a planned knockout with the key its row is
stored under, and the checks of a plan against a model.

Plans know token types and windows, never architectures: engines run them on any model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from infoflow.interventions.knockout import FeatureCategory, FeatureSelection, Knockout, KnockoutMode, window
from infoflow.interventions.mixers import Mixers, mixer_kinds

if TYPE_CHECKING:
    from infoflow.models.base import CausalLM
    from infoflow.models.modes import MixerKind


@dataclass(frozen=True)
class KnockoutOptions:
    """How knocked-out edges are removed (mode, strict, exempt fraction: recurrent layers only; attention layers
    take the defaults), and which mixers a knockout reaches (``mixers``: all, attention, recurrent, or kinds)."""

    mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION
    strict: bool = False
    exempt_fraction: float = 1 / 3
    mixers: Mixers = field(default_factory=Mixers)

    def __post_init__(self) -> None:
        if not 0.0 <= self.exempt_fraction <= 1.0:
            raise ValueError(f"exempt fraction must be in [0, 1], got {self.exempt_fraction}")

    def features(self, category: FeatureCategory, kinds: frozenset[MixerKind] | None = None) -> FeatureSelection:
        """The features a knockout of ``category`` leaves untouched; ``kinds``: those ``mixers`` resolves to."""
        return FeatureSelection(category=category, exempt_fraction=self.exempt_fraction, kinds=kinds)

    def mixer_kinds(self, model: CausalLM) -> frozenset[MixerKind] | None:
        """The mixer kinds of ``model`` a knockout reaches (None: all); a ``ValueError`` if it has none of them."""
        return mixer_kinds(model, self.mixers)

    def manifest_params(self) -> dict[str, Any]:
        """The options as a run's parameters. ``mixers`` is recorded when it restricts the knockout (a run of every
        layer keeps the identity it had before the option existed, so that it still resumes)."""
        params = {**asdict(self), "mode": self.mode.value}
        del params["mixers"]
        return {**params, "mixers": self.mixers.value} if self.mixers.restricts else params


@dataclass(frozen=True)
class PlannedKnockout:
    key: dict[str, str | int]  # the store's key columns (without run and prompt ids)
    knockout: Knockout


def check_knockouts(
    model: CausalLM,
    window_sizes: Iterable[int],
    options: KnockoutOptions,
    categories: Iterable[FeatureCategory] = (FeatureCategory.ALL,),
) -> None:
    """Refuse up front what no prompt could run: windows deeper than the model, options no layer supports, mixers
    the model lacks, feature categories (which rank recurrent features) where no recurrence is reached."""
    from infoflow.interventions.layer_knockout import check_options

    for size in window_sizes:
        window(0, size, model.n_layers)
    kinds = options.mixer_kinds(model)
    check_options(model, options.mode, options.strict, tuple(categories), kinds)
    ranked = [c.value for c in categories if c is not FeatureCategory.ALL]
    if ranked and kinds is not None and not any(kind.is_recurrent for kind in kinds):
        raise ValueError(
            f"feature category {ranked[0]!r} ranks the features of recurrent layers, and --mixers "
            f"{options.mixers.value} reaches none; use the category 'all' or --mixers all/recurrent"
        )


def relative_change(p: float, p0: float) -> float:
    """diff = (p - p0) / p0 * 100, the percent change of the target's probability (DESIGN §1)."""
    return (p - p0) / p0 * 100.0 if p0 > 0 else float("nan")
