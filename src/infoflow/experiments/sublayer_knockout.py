"""Sublayer knockout (Geva et al. 2023, §5): the mixer's or the MLP's update zeroed at the target position(s) in
every window of layers, and the target's probability recorded: per-window curves, as info-flow's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from infoflow.data.spans import TokenType
from infoflow.experiments.experiment import Block, Experiment, FigureOptions
from infoflow.experiments.runner import ChunkJob, ModelContext, Rows, RunContext, run_each, with_ids
from infoflow.experiments.sections import figure_section
from infoflow.interventions.knockout import window, window_starts
from infoflow.interventions.sites import check_sites, parse_site
from infoflow.models.modes import Site
from infoflow.store.schema import key, value

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from infoflow.data.prompts import FactPrompt
    from infoflow.data.spans import TokenSpans
    from infoflow.engines.base import TargetScores
    from infoflow.experiments.patch_runs import PlannedPatch
    from infoflow.models.base import CausalLM

SUBLAYERS = (Site.MIXER, Site.MLP)


@dataclass(frozen=True)
class SublayerKnockoutParams:
    """Which updates are knocked out (mixer, MLP), at which target token type, in windows of which sizes."""

    sites: tuple[Site, ...] = SUBLAYERS
    targets: tuple[TokenType, ...] = (TokenType.LAST,)
    window_sizes: tuple[int, ...] = (9,)

    def __post_init__(self) -> None:
        for name in ("sites", "targets", "window_sizes"):
            if not getattr(self, name):
                raise ValueError(f"a sublayer knockout needs at least one of {name.replace('_', ' ')}")
        sites = tuple(parse_site(site) for site in self.sites)
        object.__setattr__(self, "sites", sites)
        bad = [site.value for site in sites if site not in SUBLAYERS]
        if bad:
            raise ValueError(f"a sublayer knockout zeroes the mixer's or the MLP's update, not {', '.join(bad)}")


def prepare(params: SublayerKnockoutParams, model: CausalLM) -> SublayerKnockoutParams:
    """Refuse up front windows deeper than the model and the MLP of a model without one."""
    for size in params.window_sizes:
        window(0, size, model.n_layers)
    check_sites(model, params.sites)
    return params


def manifest_params(params: SublayerKnockoutParams) -> dict[str, Any]:
    return {
        "sites": [s.value for s in params.sites],
        "targets": [t.value for t in params.targets],
        "window_sizes": list(params.window_sizes),
    }


def sublayer_knockout_plan(spans: TokenSpans, n_layers: int, params: SublayerKnockoutParams) -> list[PlannedPatch]:
    """Every knockout of the sweep for one prompt: site x target x window size x window start."""
    from infoflow.experiments.patch_runs import PlannedPatch
    from infoflow.interventions.patching import Patch

    return [
        PlannedPatch(
            {"site": site.value, "target": target.value, "window_size": size, "window_start": start},
            Patch.knockout(site, window(start, size, n_layers), spans.positions(target)),
        )
        for site in params.sites
        for target in params.targets
        for size in params.window_sizes
        for start in window_starts(size, n_layers)
    ]


def sublayer_knockout_rows(plan: Sequence[PlannedPatch], scores: TargetScores) -> Rows:
    """A row per knockout: its key, p, diff = (p - p0)/p0 * 100, hit (target still top-1) and p0; ``scores``
    [1, 1 + K] hold the clean run first."""
    from infoflow.experiments.plans import relative_change

    probability, top1 = scores.probability[0].tolist(), scores.top1[0].tolist()
    p0 = probability[0]
    return [
        {**k.key, "p": p, "diff": relative_change(p, p0), "hit": hit, "p0": p0}
        for k, p, hit in zip(plan, probability[1:], top1[1:], strict=True)
    ]


def sublayer_knockout_job(params: SublayerKnockoutParams, context: ModelContext) -> ChunkJob:
    """The chunk job: prompt by prompt, each prompt's knockouts batched."""
    from infoflow.engines.patching import PatchRequest
    from infoflow.experiments.jobs import prompt_ids
    from infoflow.experiments.patch_runs import checked_scores, patch_engine

    engine = patch_engine(context)
    n_layers = context.loaded.model.n_layers

    def job(prompt: FactPrompt, spans: TokenSpans) -> Rows:
        plan = sublayer_knockout_plan(spans, n_layers, params)
        request = PatchRequest(prompt_ids(spans), spans.target_id, [None, *(k.patch for k in plan)])
        return with_ids(prompt, sublayer_knockout_rows(plan, checked_scores(engine, prompt, request)))

    return partial(run_each, job=job)


def figures(frame: pd.DataFrame, options: FigureOptions) -> Iterator[tuple[str, Figure]]:
    """Per target and window size: the curves of each site (a panel per run's model)."""
    from infoflow.plots.sublayer_knockout import sublayer_knockout_figure

    for (target, size), rows in frame.groupby(["target", "window_size"], sort=True):
        yield f"{target}-w{size}-{options.metric}", sublayer_knockout_figure(rows, metric=options.metric)


def report(frame: pd.DataFrame, options: FigureOptions) -> list[Block]:
    from infoflow.plots.aggregate import interval_caption

    return figure_section(
        "Sublayer knockout",
        f"Change of p(target) (%) with the update zeroed, with its {interval_caption()}",
        figures(frame, options),
    )


EXPERIMENT = Experiment(
    kind="sublayer_knockout",
    title="sublayer knockout",
    columns=(
        key("site", "VARCHAR"),  # mixer or mlp: whose update is zeroed
        key("target", "VARCHAR"),
        key("window_size", "INTEGER"),
        key("window_start", "INTEGER"),
        value("p", "DOUBLE", required=True),
        value("diff", "DOUBLE", required=True),
        value("hit", "BOOLEAN", required=True),
        value("p0", "DOUBLE"),
    ),
    job=sublayer_knockout_job,
    manifest_params=manifest_params,
    prepare=prepare,
    report=report,
    compare=report,
    plot=figures,
)


def sublayer_knockout(
    context: RunContext, prompts: Sequence[FactPrompt], params: SublayerKnockoutParams, chunk_size: int | None = None
) -> str:
    """p, diff and hit of the target with the mixer's or MLP's update knocked out in every window; the run id."""
    return EXPERIMENT.run(context, prompts, params, chunk_size)
