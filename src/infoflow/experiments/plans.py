"""Knockout plans: which knockouts an experiment runs on one prompt, each with the key it is stored under.

Plans know token types and windows, never architectures: engines run them on any model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from infoflow.data.spans import TokenSpans, TokenType
from infoflow.interventions.knockout import (
    FeatureCategory,
    FeatureSelection,
    Knockout,
    KnockoutMode,
    window,
    window_starts,
)

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


@dataclass(frozen=True)
class InfoFlowParams:
    """An info-flow sweep: targets x sources x feature categories x window sizes x window starts."""

    targets: tuple[TokenType, ...] = (TokenType.LAST,)
    sources: tuple[TokenType, ...] = (TokenType.SUBJECT, TokenType.RELATION, TokenType.LAST, TokenType.FIRST)
    feature_categories: tuple[FeatureCategory, ...] = (FeatureCategory.ALL,)
    window_sizes: tuple[int, ...] = (9,)
    options: KnockoutOptions = field(default_factory=KnockoutOptions)

    def __post_init__(self) -> None:
        for name in ("targets", "sources", "feature_categories", "window_sizes"):
            if not getattr(self, name):
                raise ValueError(f"an info-flow sweep needs at least one of {name.replace('_', ' ')}")

    def check_model(self, model: CausalLM) -> None:
        """Refuse up front what no prompt could run: windows deeper than the model, options no layer supports."""
        from infoflow.interventions.layer_knockout import check_options

        for size in self.window_sizes:
            window(0, size, model.n_layers)
        check_options(model, self.options.mode, self.options.strict, self.feature_categories)


@dataclass(frozen=True)
class PlannedKnockout:
    key: dict[str, str | int]  # the store's key columns (without run and prompt ids)
    knockout: Knockout


def info_flow_plan(spans: TokenSpans, n_layers: int, params: InfoFlowParams) -> list[PlannedKnockout]:
    """Every knockout of the sweep for one prompt; raises ``PromptError`` if a needed token type is empty."""
    positions = {t: spans.positions(t) for t in {*params.targets, *params.sources}}
    plan = []
    for target in params.targets:
        for source in params.sources:
            for category in params.feature_categories:
                for size in params.window_sizes:
                    for start in window_starts(size, n_layers):
                        key = {
                            "target": target.value,
                            "source": source.value,
                            "feature_category": category.value,
                            "window_size": size,
                            "window_start": start,
                        }
                        knockout = Knockout.between(
                            positions[target],
                            positions[source],
                            window(start, size, n_layers),
                            mode=params.options.mode,
                            strict=params.options.strict,
                            features=params.options.features(category),
                        )
                        plan.append(PlannedKnockout(key, knockout))
    return plan


def heatmap_plan(
    spans: TokenSpans, n_layers: int, window_size: int, options: KnockoutOptions | None = None
) -> list[PlannedKnockout]:
    """last <- position i for every position i and every window start: a [tokens x windows] grid."""
    options = options or KnockoutOptions()
    last = spans.num_tokens - 1
    return [
        PlannedKnockout(
            {"window_size": window_size, "window_start": start, "position": position},
            Knockout.between(
                [last], [position], window(start, window_size, n_layers), mode=options.mode, strict=options.strict
            ),
        )
        for start in window_starts(window_size, n_layers)
        for position in range(spans.num_tokens)
    ]


def relative_change(p: float, p0: float) -> float:
    """diff = (p - p0) / p0 * 100, the percent change of the target's probability (DESIGN §1)."""
    return (p - p0) / p0 * 100.0 if p0 > 0 else float("nan")
