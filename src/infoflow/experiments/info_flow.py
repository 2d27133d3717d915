"""The info-flow experiment: knock out target <- source edges in every window of layers and record the target's
probability p, diff = (p - p0)/p0 * 100 and hit (the target still top-1), for every target and source token type,
feature category and window size of the sweep."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infoflow.data.spans import TokenSpans, TokenType
from infoflow.experiments.experiment import (
    FLOAT_FORMAT,
    Block,
    Experiment,
    FigureBlock,
    FigureOptions,
    Heading,
    TableBlock,
    Text,
)
from infoflow.experiments.plans import KnockoutOptions, PlannedKnockout, check_knockouts, relative_change
from infoflow.experiments.runner import ChunkJob, ModelContext, Rows, RunContext, with_ids
from infoflow.interventions.knockout import FeatureCategory, Knockout, window, window_starts
from infoflow.store.schema import key, value

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from infoflow.data.prompts import FactPrompt
    from infoflow.engines.base import TargetScores
    from infoflow.models.base import CausalLM
    from infoflow.models.modes import MixerKind
    from infoflow.plots.aggregate import Metric


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
        """Refuse up front what no prompt could run: windows deeper than the model, options no layer supports,
        mixers the model lacks (``check_knockouts``)."""
        check_knockouts(model, self.window_sizes, self.options, self.feature_categories)


def prepare(params: InfoFlowParams, model: CausalLM) -> InfoFlowParams:
    params.check_model(model)
    return params


def info_flow_manifest_params(params: InfoFlowParams) -> dict[str, Any]:
    return {
        "targets": [t.value for t in params.targets],
        "sources": [s.value for s in params.sources],
        "feature_categories": [c.value for c in params.feature_categories],
        "window_sizes": list(params.window_sizes),
        **params.options.manifest_params(),
    }


def info_flow_plan(
    spans: TokenSpans, n_layers: int, params: InfoFlowParams, kinds: frozenset[MixerKind] | None = None
) -> list[PlannedKnockout]:
    """Every knockout of the sweep for one prompt; raises ``PromptError`` if a needed token type is empty.
    ``kinds``: the mixer kinds the knockouts reach (``params.options.mixer_kinds(model)``; None: every kind)."""
    types = sorted({*params.targets, *params.sources})
    positions = tuple((t, spans.positions(t)) for t in types)
    return list(positions_plan(positions, n_layers, params, kinds))


@functools.lru_cache(maxsize=256)
def positions_plan(
    positions: tuple[tuple[TokenType, tuple[int, ...]], ...],
    n_layers: int,
    params: InfoFlowParams,
    kinds: frozenset[MixerKind] | None,
) -> tuple[PlannedKnockout, ...]:
    """The plan of a prompt whose token types lie at ``positions``: prompts that share them (many do in a
    dataset) share their planned knockouts, which are immutable (keys are copied into rows)."""
    at = dict(positions)
    # what the knockouts share is made once: windows, feature selections, edges (as ``Knockout.between`` makes them)
    windows = {
        size: [(start, window(start, size, n_layers)) for start in window_starts(size, n_layers)]
        for size in params.window_sizes
    }
    features = {category: params.options.features(category, kinds) for category in params.feature_categories}
    mode, strict = params.options.mode, params.options.strict
    plan = []
    for target in params.targets:
        for source in params.sources:
            edges = Knockout.between(at[target], at[source], ()).edges
            for category in params.feature_categories:
                for size in params.window_sizes:
                    for start, layers in windows[size]:
                        row_key = {
                            "target": target.value,
                            "source": source.value,
                            "feature_category": category.value,
                            "window_size": size,
                            "window_start": start,
                        }
                        knockout = Knockout(edges, layers, mode=mode, strict=strict, features=features[category])
                        plan.append(PlannedKnockout(row_key, knockout))
    return tuple(plan)


def info_flow_rows(plan: Sequence[PlannedKnockout], scores: TargetScores) -> Rows:
    """A row per planned knockout: its key, p, diff = (p - p0)/p0 * 100, hit (target still top-1) and p0;
    ``scores`` hold the clean run first, then the plan's knockouts."""
    p0 = scores.probability[0].item()
    return [
        {**k.key, "p": p, "diff": relative_change(p, p0), "hit": hit, "p0": p0}
        for k, p, hit in zip(plan, scores.probability[1:].tolist(), scores.top1[1:].tolist(), strict=True)
    ]


def info_flow_job(params: InfoFlowParams, context: ModelContext) -> ChunkJob:
    """The chunk job of ``info_flow``."""
    from infoflow.experiments.jobs import knockout_job

    model = context.loaded.model
    kinds = params.options.mixer_kinds(model)

    def rows_of(prompt: FactPrompt, spans: TokenSpans, plan: list[PlannedKnockout], scores: TargetScores) -> Rows:
        return with_ids(prompt, info_flow_rows(plan, scores))

    return knockout_job(context, lambda spans: info_flow_plan(spans, model.n_layers, params, kinds), rows_of)


CURVES: tuple[tuple[Metric, str], ...] = (("diff", "mean change of p(target) (%)"), ("hit", "% of prompts still top-1"))


def report(frame: pd.DataFrame, options: FigureOptions) -> list[Block]:
    """Per source, the window of the strongest effect; curves by feature category (and by window size)."""
    import pandas as pd

    from infoflow.plots.aggregate import interval_caption
    from infoflow.plots.info_flow import info_flow_figure
    from infoflow.plots.style import feature_label
    from infoflow.plots.summary import flow_minima

    minima = flow_minima(frame)
    minima = pd.DataFrame(
        {
            "target": minima["target"],
            "source": minima["source"],
            "feature category": minima["feature_category"].map(feature_label),
            "window size": minima["window_size"],
            "prompts": minima["n"],
            "min mean change (%)": minima["min_mean_diff"].map(FLOAT_FORMAT),
            "95 % CI": [
                f"[{FLOAT_FORMAT(lo)}, {FLOAT_FORMAT(hi)}]"
                for lo, hi in zip(minima["low"], minima["high"], strict=True)
            ],
            "window start": minima["window_start"],
            "depth (%)": minima["depth"].round(1),
            "still top-1 (%)": minima["hit_rate"].round(1),
        }
    )
    blocks: list[Block] = [
        Heading("Strongest effect per source"),
        Text(
            f"The window with the lowest mean change of p(target), with its {interval_caption()}; "
            "depth: 100 % = last window start; still top-1: prompts whose target stays the top prediction there."
        ),
        TableBlock(minima),
        Heading("Curves"),
    ]
    for (target, size), rows in frame.groupby(["target", "window_size"], sort=True):
        for metric, what in CURVES:
            caption = f"{what} by feature category with its {interval_caption()}; target {target}, window size {size}"
            figure = info_flow_figure(rows, lines="feature_category", metric=metric, x=options.x)
            blocks.append(FigureBlock(figure, caption))
    if frame["window_size"].nunique() > 1:
        for (target, category), rows in frame.groupby(["target", "feature_category"], sort=True):
            caption = (
                f"Mean change of p(target) (%) by window size with its {interval_caption()}; target {target}, "
                f"feature category {feature_label(category)}"
            )
            blocks.append(FigureBlock(info_flow_figure(rows, lines="window_size", x=options.x), caption))
    return blocks


def compare(frame: pd.DataFrame, options: FigureOptions) -> list[Block]:
    """Curves of several models (each once: ``one_run_per_model``) where their runs share a target, feature
    category, window size and mixers; then each hybrid's split: the runs of one model that differ in ``mixers``
    only, side by side."""
    from infoflow.plots.aggregate import interval_caption
    from infoflow.plots.info_flow import info_flow_figure
    from infoflow.plots.load import mixer_splits, one_run_per_model

    blocks: list[Block] = [Heading("Info flow: models compared", level=2)]
    keys = ["target", "feature_category", "window_size", "mixers"]
    for shared, rows in frame.groupby(keys, sort=True):
        rows = one_run_per_model(rows)
        if rows["model"].nunique() > 1:
            caption = f"Mean change of p(target) (%) with its {interval_caption()}; " + ", ".join(
                f"{k} {v}" for k, v in zip(keys, shared, strict=True)
            )
            blocks.append(FigureBlock(info_flow_figure(rows, lines="model", x=options.x), caption))
    if len(blocks) == 1:
        blocks.append(Text("No two models share a target, feature category, window size and mixers.", "note"))
    for split in mixer_splits(frame):
        blocks += mixer_split(split, options)
    return blocks


def mixer_split(frame: pd.DataFrame, options: FigureOptions) -> list[Block]:
    """One model's runs that differ in ``mixers``: the knockout through attention and through the recurrence next
    to the knockout of all layers, per target and window size."""
    from infoflow.plots.aggregate import interval_caption
    from infoflow.plots.info_flow import info_flow_figure

    blocks: list[Block] = [
        Heading(f"Info flow of {frame['model'].iloc[0]}: through attention vs through the recurrence", level=2),
        Text(
            "The same edges knocked out in the attention layers only, in the recurrent layers only, and in every "
            "layer of each window (windows of depth over all layers). A fact that reaches the last token through one "
            "path only drops p when that path is blocked.",
            "meta",
        ),
    ]
    for (target, size), rows in frame.groupby(["target", "window_size"], sort=True):
        if rows["mixers"].nunique() > 1:
            caption = (
                f"Mean change of p(target) (%) by the mixers knocked out with its {interval_caption()}; "
                f"target {target}, window size {size}"
            )
            blocks.append(FigureBlock(info_flow_figure(rows, lines="mixers", x=options.x), caption))
    return blocks


def plot(frame: pd.DataFrame, options: FigureOptions) -> Iterator[tuple[str, Figure]]:
    """One figure: the curves of every run, a line per ``options.lines``."""
    from infoflow.plots.info_flow import info_flow_figure

    yield options.metric, info_flow_figure(frame, lines=options.lines, metric=options.metric, x=options.x)


EXPERIMENT = Experiment(
    kind="info_flow",
    title="info flow",
    columns=(
        key("target", "VARCHAR"),
        key("source", "VARCHAR"),
        key("feature_category", "VARCHAR"),
        key("window_size", "INTEGER"),
        key("window_start", "INTEGER"),
        value("p", "DOUBLE", required=True),
        value("diff", "DOUBLE", required=True),
        value("hit", "BOOLEAN", required=True),
        value("p0", "DOUBLE"),
    ),
    job=info_flow_job,
    manifest_params=info_flow_manifest_params,
    prepare=prepare,
    report=report,
    compare=compare,
    plot=plot,
)


def info_flow(
    context: RunContext, prompts: Sequence[FactPrompt], params: InfoFlowParams, chunk_size: int | None = None
) -> str:
    """p, diff = (p - p0)/p0 * 100 and hit (target still top-1) for every knockout of the sweep."""
    return EXPERIMENT.run(context, prompts, params, chunk_size)
