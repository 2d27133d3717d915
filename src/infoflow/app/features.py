"""Mamba-features page logic: per layer, the distribution of decay norms ``Σ_n exp(−exp(A_log))`` with the
category split the knockouts use (``FeatureSelection``), and the effect of knocking out each category."""

from __future__ import annotations

import pandas as pd

from infoflow.app.errors import AppError
from infoflow.app.explorer import ExplorerRequest, Progress, explore, no_progress
from infoflow.data.spans import TokenType
from infoflow.interventions.knockout import FeatureCategory, FeatureSelection
from infoflow.models.load import LoadedModel
from infoflow.plots.style import FEATURE_COLORS

# The thirds of the decay ranking, named as the knockouts' feature categories name them (plots.style), coloured as
# the category that knocks them out (fast_decay knocks out the slow-decay, context-dependent features).
FASTEST = "fast-decay, context-independent (kept by fast_decay)"
SLOWEST = "slow-decay, context-dependent (kept by slow_decay)"
MIDDLE = "middle (knocked out by both)"
COLORS = {
    FASTEST: FEATURE_COLORS[FeatureCategory.SLOW_DECAY],
    MIDDLE: "#999999",
    SLOWEST: FEATURE_COLORS[FeatureCategory.FAST_DECAY],
}
ORDER = tuple(COLORS)
DECAY_NORM = "decay norm Σₙ exp(−exp(A_log))"


def require_ssm(loaded: LoadedModel) -> None:
    if not loaded.model.has_decay_features:
        raise AppError(
            f"{loaded.name} ({loaded.model.family}) has no layer whose features decay: decay norms and feature "
            "categories exist for recurrent layers (Mamba, Gated DeltaNet, RG-LRU); choose builtin-mamba1, "
            "builtin-mamba2 or another model with them"
        )


def decay_table(loaded: LoadedModel, exempt_fraction: float = 1 / 3) -> pd.DataFrame:
    """One row per layer and feature: ``layer``, ``feature``, ``decay_norm``, ``category``."""
    require_ssm(loaded)
    frames = []
    for layer in range(loaded.model.n_layers):
        norms = loaded.model.mixer(layer).decay_norms()
        if norms is None:  # an attention layer of a hybrid: no decay to rank
            continue
        norms = norms.detach().float().cpu()
        fast = FeatureSelection(FeatureCategory.FAST_DECAY, exempt_fraction).exempt_mask(norms)
        slow = FeatureSelection(FeatureCategory.SLOW_DECAY, exempt_fraction).exempt_mask(norms)
        assert fast is not None and slow is not None
        category = [
            FASTEST if f else SLOWEST if s else MIDDLE for f, s in zip(fast.tolist(), slow.tolist(), strict=True)
        ]
        frames.append(
            pd.DataFrame(
                {"layer": layer, "feature": range(len(norms)), "decay_norm": norms.tolist(), "category": category}
            )
        )
    return pd.concat(frames, ignore_index=True)


def layer_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per layer and category: feature count and decay-norm range."""
    return (
        table.groupby(["layer", "category"])["decay_norm"]
        .agg(features="count", min="min", median="median", max="max")
        .reset_index()
    )


def category_effect(
    loaded: LoadedModel,
    prompt: str,
    subject: str = "",
    window_size: int | None = None,
    progress: Progress = no_progress,
) -> pd.DataFrame:
    """Info-flow rows (subject → last, every window) of one prompt with each feature category knocked out."""
    require_ssm(loaded)
    request = ExplorerRequest(
        prompt=prompt,
        subject=subject,
        window_size=window_size,
        sources=(TokenType.SUBJECT,),
        feature_categories=tuple(FeatureCategory),
        heatmap=False,
    )
    return explore(loaded, request, progress).curve_rows
