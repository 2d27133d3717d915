"""What the knockout experiments share: how edges are knocked out, a planned knockout with the key its row is
stored under, and the checks of a plan against a model.

Plans know token types and windows, never architectures: engines run them on any model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from infoflow.interventions.knockout import FeatureCategory, FeatureSelection, Knockout, KnockoutMode, window

if TYPE_CHECKING:
    from infoflow.models.base import CausalLM


@dataclass(frozen=True)
class KnockoutOptions:
    """How knocked-out edges are removed (Mamba only; attention models take the defaults)."""

    mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION
    strict: bool = False
    exempt_fraction: float = 1 / 3

    def __post_init__(self) -> None:
        if not 0.0 <= self.exempt_fraction <= 1.0:
            raise ValueError(f"exempt fraction must be in [0, 1], got {self.exempt_fraction}")

    def features(self, category: FeatureCategory) -> FeatureSelection:
        return FeatureSelection(category=category, exempt_fraction=self.exempt_fraction)

    def manifest_params(self) -> dict[str, Any]:
        return {**asdict(self), "mode": self.mode.value}


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
    """Refuse up front what no prompt could run: windows deeper than the model, options no layer supports."""
    from infoflow.interventions.layer_knockout import check_options

    for size in window_sizes:
        window(0, size, model.n_layers)
    check_options(model, options.mode, options.strict, tuple(categories))


def relative_change(p: float, p0: float) -> float:
    """diff = (p - p0) / p0 * 100, the percent change of the target's probability (DESIGN §1)."""
    return (p - p0) / p0 * 100.0 if p0 > 0 else float("nan")
