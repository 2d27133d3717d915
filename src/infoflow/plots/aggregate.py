"""Per-window aggregation of info-flow rows: mean and its confidence interval, by window index or depth percent.

The interval (``Interval``) is by default a **percentile bootstrap** of the mean over prompts
(``BOOTSTRAP_SAMPLES`` resamples, seeded): every resampled mean is a mean of the prompts' own values, so the
interval stays where the quantity can be: a change of p (``diff`` = (p − p0)/p0 · 100) never below −100 %, a
hit rate within [0, 100] %. ``interval="t"`` gives the reference's Student-t interval (research/
reference-spec.md §9.1), ``mean ± t_{(1+c)/2, n-1} · s / sqrt(n)`` with ``s`` the sample standard deviation
(ddof 1), which is symmetric and can cross those bounds for skewed values. Either collapses to the mean when
``n == 1`` or ``s == 0``. Depth percent puts window start 0 at 0 % and the
**last window start** (``n_layers - window_size``) at 100 %, then interpolates every line linearly onto
one common grid, so models of different depth share an axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

Metric = Literal["diff", "hit"]
Interval = Literal["bootstrap", "t"]
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
INTERVAL_NAMES = {"bootstrap": "percentile-bootstrap", "t": "Student-t"}


def interval_caption(interval: Interval = "bootstrap", confidence: float = 0.95) -> str:
    """How a band was computed, for captions: ``95 % percentile-bootstrap interval of the mean``."""
    return f"{100 * confidence:g} % {INTERVAL_NAMES[interval]} interval of the mean over prompts"


def metric_values(frame: pd.DataFrame, metric: Metric) -> pd.Series:
    """The plotted value per row: ``diff`` (percent change of p) or ``hit`` as 0/100 (percent still top-1)."""
    if metric == "diff":
        return frame["diff"].astype(float)
    if metric == "hit":
        return frame["hit"].astype(float) * 100.0
    raise ValueError(f"metric must be 'diff' or 'hit', not {metric!r}")


def t_half_width(n: np.ndarray, std: np.ndarray, confidence: float = 0.95) -> np.ndarray:
    """Half width of the Student-t interval, ``t_{(1+c)/2, n-1} · s / sqrt(n)``; 0 where n <= 1 or s == 0."""
    n = np.asarray(n, dtype=float)
    std = np.nan_to_num(np.asarray(std, dtype=float), nan=0.0)  # std is NaN for n == 1 (ddof 1)
    valid = (n > 1) & (std > 0)
    safe_n = np.where(valid, n, 2.0)
    half = stats.t.ppf((1 + confidence) / 2, safe_n - 1) * std / np.sqrt(safe_n)
    return np.where(valid, half, 0.0)


def bootstrap_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values``: the (1 ∓ c)/2 quantiles of the means of
    ``BOOTSTRAP_SAMPLES`` resamples with replacement (seeded, so the same values give the same interval)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) <= 1 or np.all(values == values[0]):
        mean = float(values.mean()) if len(values) else float("nan")
        return mean, mean
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = values[rng.integers(0, len(values), size=(BOOTSTRAP_SAMPLES, len(values)))].mean(axis=1)  # [B]
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def aggregate(
    frame: pd.DataFrame,
    by: Sequence[str] = (),
    metric: Metric = "diff",
    confidence: float = 0.95,
    interval: Interval = "bootstrap",
) -> pd.DataFrame:
    """Mean and confidence interval (``interval``, see the module's docstring) of ``metric`` per ``by`` columns
    and window start.

    Returns one row per group and window: the ``by`` columns, ``window_start``, then ``n`` (prompts),
    ``mean``, ``std`` (ddof 1), ``low`` and ``high`` (the interval), sorted by group and window.
    """
    keys = [*by, "window_start"]
    values = frame[keys].assign(value=metric_values(frame, metric))
    groups = values.groupby(keys, sort=True, dropna=False)["value"]
    out = groups.agg(n="count", mean="mean", std="std").reset_index()
    if interval == "t":
        half = t_half_width(out["n"].to_numpy(), out["std"].to_numpy(), confidence)
        return out.assign(low=out["mean"] - half, high=out["mean"] + half)
    if interval != "bootstrap":
        raise ValueError(f"interval must be 'bootstrap' or 't', not {interval!r}")
    bounds = [bootstrap_interval(group.to_numpy(), confidence) for _, group in groups]  # same order as ``out``
    return out.assign(low=[b[0] for b in bounds], high=[b[1] for b in bounds])


def last_window_start(frame: pd.DataFrame) -> int:
    """The window start at 100 % depth for rows of one model and window size: ``n_layers - window_size``
    where both columns are known, else the largest window start present."""
    if {"n_layers", "window_size"} <= set(frame.columns):
        n_layers = pd.to_numeric(frame["n_layers"], errors="coerce").dropna().unique()
        sizes = frame["window_size"].unique()
        if len(n_layers) == 1 and len(sizes) == 1:
            return int(n_layers[0] - sizes[0])
    return int(frame["window_start"].max())


def depth_of(window_start: np.ndarray, last_start: int) -> np.ndarray:
    """Depth percent of window starts, ``100 · window_start / last_start`` (0 when there is one window)."""
    return 100.0 * np.asarray(window_start, dtype=float) / last_start if last_start > 0 else np.zeros(len(window_start))


def aggregate_by_depth(
    frame: pd.DataFrame,
    by: Sequence[str] = (),
    metric: Metric = "diff",
    confidence: float = 0.95,
    n_points: int | None = None,
    interval: Interval = "bootstrap",
) -> pd.DataFrame:
    """``aggregate``, then each group's mean and interval interpolated linearly onto ``n_points`` depths in
    [0, 100] (default: the most windows of any group, ``max(last window start) + 1``, as the reference).

    Each ``by`` group must hold one model depth and window size (columns ``n_layers``, ``window_size``).
    Depths beyond a group's computed windows (a partial run) are NaN, not extrapolated. Returns the
    ``by`` columns, ``depth``, ``mean``, ``low``, ``high`` and ``n`` (fewest prompts over the windows).
    """
    by = list(by)
    scale = [c for c in ("n_layers", "window_size") if c in frame.columns and c not in by]
    agg = aggregate(frame, [*by, *scale], metric, confidence, interval)
    groups = list(agg.groupby(by, sort=True, dropna=False)) if by else [((), agg)]
    for key, group in groups:
        if scale and len(group[scale].drop_duplicates()) > 1:  # (no columns: every row is its own)
            raise ValueError(f"group {key} mixes several {' / '.join(scale)}; add them to `by`")
    lasts = [last_window_start(group) for _, group in groups]
    grid = np.linspace(0.0, 100.0, n_points or max(lasts) + 1)
    parts = []
    for (key, group), last in zip(groups, lasts, strict=True):
        xp = depth_of(group["window_start"].to_numpy(), last)
        part: dict[str, object] = dict(zip(by, key, strict=True)) | {"depth": grid, "n": int(group["n"].min())}
        for column in ("mean", "low", "high"):
            part[column] = np.interp(grid, xp, group[column].to_numpy(), left=np.nan, right=np.nan)
        parts.append(pd.DataFrame(part))
    return pd.concat(parts, ignore_index=True)[[*by, "depth", "mean", "low", "high", "n"]]
