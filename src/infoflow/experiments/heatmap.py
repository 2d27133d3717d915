"""The heatmap experiment: knock out last <- position i for every position i and every window of layers, and
record the target's probability p: a [tokens x windows] map per prompt."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infoflow.experiments.experiment import Block, Experiment, FigureBlock, FigureOptions, Heading, Text
from infoflow.experiments.plans import KnockoutOptions, PlannedKnockout, check_knockouts
from infoflow.experiments.runner import ChunkJob, ModelContext, Rows, RunContext, with_ids
from infoflow.interventions.knockout import FeatureCategory, Knockout, window, window_starts
from infoflow.store.schema import key, value

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from infoflow.data.prompts import FactPrompt
    from infoflow.data.spans import TokenSpans
    from infoflow.engines.base import TargetScores
    from infoflow.models.base import CausalLM
    from infoflow.models.modes import MixerKind


@dataclass(frozen=True)
class HeatmapParams:
    window_size: int
    options: KnockoutOptions = field(default_factory=KnockoutOptions)


def prepare(params: HeatmapParams, model: CausalLM) -> HeatmapParams:
    check_knockouts(model, (params.window_size,), params.options)
    return params


def manifest_params(params: HeatmapParams) -> dict[str, Any]:
    return {"window_size": params.window_size, **params.options.manifest_params()}


def heatmap_plan(
    spans: TokenSpans,
    n_layers: int,
    window_size: int,
    options: KnockoutOptions | None = None,
    kinds: frozenset[MixerKind] | None = None,
) -> list[PlannedKnockout]:
    """last <- position i for every position i and every window start: a [tokens x windows] grid; ``kinds``: the
    mixer kinds the knockouts reach (``options.mixer_kinds(model)``; None: every kind)."""
    options = options or KnockoutOptions()
    last = spans.num_tokens - 1
    return [
        PlannedKnockout(
            {"window_size": window_size, "window_start": start, "position": position},
            Knockout.between(
                [last],
                [position],
                window(start, window_size, n_layers),
                mode=options.mode,
                strict=options.strict,
                features=options.features(FeatureCategory.ALL, kinds),
            ),
        )
        for start in window_starts(window_size, n_layers)
        for position in range(spans.num_tokens)
    ]


def heatmap_rows(plan: Sequence[PlannedKnockout], scores: TargetScores, tokens: Sequence[str]) -> Rows:
    """A row per planned knockout: its key, p, the knocked-out position's token and p0; ``scores`` hold the
    clean run first, then the plan's knockouts."""
    p0 = scores.probability[0].item()
    return [
        {**k.key, "p": p, "token": tokens[int(k.key["position"])], "p0": p0}
        for k, p in zip(plan, scores.probability[1:].tolist(), strict=True)
    ]


def heatmap_job(params: HeatmapParams, context: ModelContext) -> ChunkJob:
    """The chunk job of ``heatmap``."""
    from infoflow.experiments.jobs import knockout_job

    model = context.loaded.model
    tokenizer = context.loaded.tokenizer
    kinds = params.options.mixer_kinds(model)

    def rows_of(prompt: FactPrompt, spans: TokenSpans, plan: list[PlannedKnockout], scores: TargetScores) -> Rows:
        return with_ids(prompt, heatmap_rows(plan, scores, [tokenizer.decode([i]) for i in spans.input_ids]))

    def plan_of(spans: TokenSpans) -> list[PlannedKnockout]:
        return heatmap_plan(spans, model.n_layers, params.window_size, params.options, kinds)

    return knockout_job(context, plan_of, rows_of)


def report(frame: pd.DataFrame, options: FigureOptions) -> list[Block]:
    """The heatmaps of the run's first ``options.prompts`` prompts, per window size."""
    from infoflow.plots.heatmap import heatmap_figure

    prompts = sorted(frame["prompt_id"].unique())
    shown = prompts[: options.prompts]
    blocks: list[Block] = [Heading("Heatmaps"), Text(f"{len(shown)} of {len(prompts)} prompts shown.")]
    for size, rows in frame.groupby("window_size", sort=True):
        for prompt_id in shown:
            if (rows["prompt_id"] == prompt_id).any():
                figure = heatmap_figure(rows, int(prompt_id), window_size=int(size), x=options.x)
                blocks.append(FigureBlock(figure, f"p − p0, prompt {prompt_id}, window size {size}"))
    return blocks


def compare(frame: pd.DataFrame, options: FigureOptions) -> list[Block]:
    """Side-by-side heatmaps of the prompts (at most ``options.prompts``) that several runs share."""
    from infoflow.plots.heatmap import heatmap_figure

    blocks: list[Block] = [Heading("Heatmaps: models compared", level=2)]
    for size, rows in frame.groupby("window_size", sort=True):
        shared = rows.groupby("prompt_id")["model"].nunique()
        for prompt_id in shared[shared > 1].index[: options.prompts]:
            figure = heatmap_figure(rows, int(prompt_id), window_size=int(size), x=options.x)
            caption = f"p − p0 knocking out each token → last; prompt {prompt_id}, window size {size}"
            blocks.append(FigureBlock(figure, caption))
    if len(blocks) == 1:
        blocks.append(Text("No prompt and window size is shared by two heatmap runs.", "note"))
    return blocks


def plot(frame: pd.DataFrame, options: FigureOptions) -> Iterator[tuple[str, Figure]]:
    """A figure per prompt: the heatmaps of every run side by side."""
    from infoflow.plots.heatmap import heatmap_figure

    for prompt_id in sorted(frame["prompt_id"].unique()):
        yield f"prompt{prompt_id}", heatmap_figure(frame, int(prompt_id), x=options.x)


EXPERIMENT = Experiment(
    kind="heatmap",
    title="heatmap",
    columns=(
        key("window_size", "INTEGER"),
        key("window_start", "INTEGER"),
        key("position", "INTEGER"),
        value("p", "DOUBLE", required=True),
        value("token", "VARCHAR"),
        value("p0", "DOUBLE"),
    ),
    job=heatmap_job,
    manifest_params=manifest_params,
    prepare=prepare,
    report=report,
    compare=compare,
    plot=plot,
)


def heatmap(
    context: RunContext,
    prompts: Sequence[FactPrompt],
    window_size: int,
    options: KnockoutOptions | None = None,
    chunk_size: int | None = None,
) -> str:
    """p of the target when last <- position i is knocked out, for every position i and window start."""
    return EXPERIMENT.run(context, prompts, HeatmapParams(window_size, options or KnockoutOptions()), chunk_size)
