"""What an experiment is: its parameters, how it computes rows and what they are, and how reports show them.

Each experiment is one module of this package (``evaluate``, ``info_flow``, ``heatmap``, ``attention``) that
defines one ``Experiment``; ``experiments.registry.EXPERIMENTS`` lists them by kind. The store creates each
experiment's row table from its ``columns``, the runner runs its ``job``, and ``infoflow report``, ``infoflow
plot`` and the web app show its runs through its hooks: nothing else names an experiment.

Importing an experiment module imports no torch, matplotlib or DuckDB (the store, the report and the command
line read its table and hooks): its job imports what it computes with, its hooks what they draw with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from infoflow.experiments import runner
from infoflow.store.schema import Column, Table

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from infoflow.data.prompts import FactPrompt
    from infoflow.experiments.runner import ChunkJob, ModelContext, RunContext
    from infoflow.models.base import CausalLM

P = TypeVar("P")  # an experiment's parameters: a frozen dataclass (picklable: Ray workers get it)


@dataclass(frozen=True)
class FigureOptions:
    """How reports and ``infoflow plot`` draw runs (each experiment uses what applies to it)."""

    x: Literal["depth", "window"] = "depth"  # depth (% of the model) or window (index)
    prompts: int = 4  # prompts drawn one by one (heatmaps) per run
    metric: Literal["diff", "hit"] = "diff"  # info-flow curves: % change of p, or % of prompts still top-1
    lines: str = "model"  # info-flow curves of ``infoflow plot``: model, feature_category or window_size


FLOAT_FORMAT = "{:.3g}".format  # numbers in report tables


# A report is a list of blocks, which the HTML report (and any other view) renders.
@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 3


@dataclass(frozen=True)
class Text:
    text: str
    style: Literal["meta", "note"] = "meta"  # meta: a description; note: something that is not there


@dataclass(frozen=True)
class TableBlock:
    frame: pd.DataFrame


@dataclass(frozen=True)
class FigureBlock:
    figure: Figure
    caption: str


Block = Heading | Text | TableBlock | FigureBlock
# The rows of runs of one experiment (as ``plots.load.runs_frame`` gives them: with model, n_layers, dataset) -> ...
ReportHook = Callable[["pd.DataFrame", FigureOptions], list[Block]]
PlotHook = Callable[["pd.DataFrame", FigureOptions], Iterator[tuple[str, "Figure"]]]  # (file name part, figure)


def keep_params(params: P, model: CausalLM) -> P:
    """The ``prepare`` of an experiment whose parameters need no model to be checked or completed."""
    return params


@dataclass(frozen=True)
class Experiment(Generic[P]):
    """One experiment: everything infoflow needs to run it, store it and show it.

    ``job(params, context)`` makes the chunk job that turns a chunk of prompts into rows (a module-level
    function, so that ``partial(job, params)`` pickles for Ray workers); ``prepare(params, model)`` checks the
    parameters against the model (a ``ValueError`` for what no prompt could run) and fills in what depends on
    it; ``manifest_params(params)`` is what the run's manifest records, and so part of the run's identity.
    """

    kind: str  # the run's kind and its row table's name: lower_snake_case, unique
    title: str  # for people: "info flow"
    columns: tuple[Column, ...]  # the row table after run_id and prompt_id (key columns first)
    job: Callable[[P, ModelContext], ChunkJob]
    manifest_params: Callable[[P], dict[str, Any]]
    prepare: Callable[[P, CausalLM], P] = keep_params
    chunk_size: int | None = None  # prompts per chunk; None: as many as the engine runs in one clean pass
    report: ReportHook | None = None  # a run's section of the report
    compare: ReportHook | None = None  # the report's section on two or more runs of it ([]: no section)
    plot: PlotHook | None = None  # the figures of ``infoflow plot``

    @property
    def table(self) -> Table:
        return Table(self.kind, self.columns)

    def run(self, context: RunContext, prompts: Sequence[FactPrompt], params: P, chunk_size: int | None = None) -> str:
        """Run (or resume) the experiment on ``prompts`` into the context's store; returns the run id."""
        params = self.prepare(params, context.loaded.model)
        job = partial(self.job, params)
        return runner.run_prompts(
            context, self.kind, self.manifest_params(params), prompts, job, chunk_size=chunk_size or self.chunk_size
        )
