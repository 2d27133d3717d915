"""Choosing the prompts of a run: a checked filter expression, then a seeded sample of what it selects.

The prompts chosen are always ``sample(selection of the filter over the dataset, limit, seed)``. With a
limit they are found without the whole selection: the prompts are walked in the seeded order of
``filters.sample`` and the model under study is evaluated chunk by chunk, only on prompts whose selection
depends on its ranks, until ``limit`` pass. Evaluations already stored are reused (the evaluate run resumes),
so the sample is the same whether or not they were. Without a limit every such prompt is evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from infoflow.data.prompts import FactPrompt
from infoflow.experiments.evaluate import evaluate
from infoflow.experiments.filters import FilterContext, FilterError, parse_filter, sample, seeded_order
from infoflow.experiments.runner import RunContext
from infoflow.naming import short_model_name
from infoflow.store import ResultsStore, Run, RunStatus

MIN_CHUNK = 32  # prompts evaluated at least per step: one evaluate batch
FIRST_GUESS = 4  # before any pass rate is known, evaluate this many prompts per prompt still wanted
MARGIN = 1.5  # then evaluate this many times what the pass rate so far predicts


@dataclass(frozen=True)
class Selection:
    """The prompts chosen, and why there are fewer than the limit asked for (None: there are not)."""

    prompts: list[FactPrompt]
    n_candidates: int  # prompts considered: the whole dataset
    shortfall: str | None = None

    def recorded(self, description: str) -> str:
        """A run's selection as its manifest records it: ``description``, then the shortfall if any."""
        if self.shortfall is None:
            return description
        return f"{description}; only {len(self.prompts)} of {self.n_candidates} pass"


def latest_evaluate_run(store: ResultsStore, model: str, dataset: str) -> Run | None:
    """The most recent evaluate run of ``model`` on ``dataset``, or None."""
    runs = store.runs()
    if runs.empty:
        return None
    runs = runs[(runs["kind"] == "evaluate") & (runs["model_id"] == model) & (runs["dataset"] == dataset)]
    if runs.empty:
        return None
    return store.run(runs.sort_values("updated_at")["run_id"].iloc[-1])


def latest_evaluate_ranks(store: ResultsStore, model: str, dataset: str) -> dict[int, int] | None:
    """{prompt_id: rank} of the most recent evaluate run of ``model`` on ``dataset``, or None."""
    run = latest_evaluate_run(store, model, dataset)
    return None if run is None else run_ranks(store, run.run_id)


def other_model_ranks(store: ResultsStore, model: str, dataset: str) -> dict[int, int]:
    """{prompt_id: rank} of another model than the one under study, from its most recent evaluate run, which
    must be complete (a partial one, e.g. evaluated only as far as a selection needed, would silently count
    the prompts it lacks as wrong)."""
    run = latest_evaluate_run(store, model, dataset)
    evaluate_it = f"run `infoflow evaluate --model {model} --dataset {dataset}`"
    if run is None:
        raise FilterError(f"no evaluate results for model {model!r} on dataset {dataset!r}; {evaluate_it} first")
    if run.status is not RunStatus.COMPLETE:
        raise FilterError(
            f"the evaluate results of model {model!r} on dataset {dataset!r} are {run.status.value} "
            f"({run.message or 'stopped before the end'}); {evaluate_it} to complete them"
        )
    return run_ranks(store, run.run_id)


def run_ranks(store: ResultsStore, run_id: str) -> dict[int, int]:
    """{prompt_id: rank} of an evaluate run."""
    frame = store.frame(run_id, "evaluate")
    return dict(zip(frame["prompt_id"].astype(int), frame["rank"].astype(int), strict=True))


def chunk_size(wanted: int, examined: int, passed: int) -> int:
    """How many more prompts to examine to find ``wanted`` more that pass, given how many of those examined so
    far passed: ``FIRST_GUESS`` per prompt wanted at first, then ``MARGIN`` times what the pass rate predicts
    (twice as many as examined while none passed), and at least ``MIN_CHUNK``."""
    if examined == 0:
        guess = FIRST_GUESS * wanted
    elif passed == 0:
        guess = examined
    else:
        guess = math.ceil(MARGIN * wanted * examined / passed)
    return max(MIN_CHUNK, guess)


class StudyEvaluation:
    """The ranks of the model under study, evaluated on demand into its evaluate run of filter ``all``."""

    def __init__(self, context: RunContext, by_id: Mapping[int, FactPrompt]) -> None:
        self.context, self.by_id = replace(context, dataset_filter="all"), by_id
        self.ranks: dict[int, int] = {}
        self.run_id: str | None = None

    def add(self, prompt_ids: Sequence[int]) -> None:
        """Evaluate these prompts (those stored are only read back); a prompt that cannot be evaluated gets no
        rank, as in the evaluate run."""
        if not prompt_ids:
            return
        self.run_id = evaluate(self.context, [self.by_id[i] for i in sorted(prompt_ids)])
        self.ranks.update(run_ranks(self.context.store, self.run_id))

    def record_coverage(self) -> None:
        """An evaluate run that did not reach every prompt is marked partial, saying so: evaluating the whole
        dataset later resumes it."""
        if self.run_id is None:
            return
        done = self.context.store.completed_prompts(self.run_id) & self.by_id.keys()
        if len(done) < len(self.by_id):
            message = f"evaluated on {len(done)} of {len(self.by_id)} prompts, as far as a prompt selection needed"
            self.context.store.finish_run(self.run_id, RunStatus.PARTIAL, message)


def choose(
    context: RunContext,
    prompts: Sequence[FactPrompt],
    expression: str = "all",
    limit: int | None = None,
    seed: int = 0,
) -> Selection:
    """The prompts ``expression`` selects, at most ``limit`` of them drawn with ``seed``; the model under study
    is evaluated only on the prompts that decide this (see the module's docstring)."""
    rule = parse_filter(expression)  # every mistake in the expression is found before any evaluation
    by_id = {prompt.prompt_id: prompt for prompt in prompts}
    study = context.loaded.name
    evaluation = StudyEvaluation(context, by_id)
    others: dict[str, dict[int, int]] = {}

    def ranks(model: str) -> Mapping[int, int]:
        if model == study:
            return evaluation.ranks
        if model not in others:
            others[model] = other_model_ranks(context.store, model, context.dataset)
        return others[model]

    whole = FilterContext(universe=frozenset(by_id), model=study, ranks=ranks)
    surely, maybe = rule.bounds(whole, pending=study)  # other models' ranks are read here, before any evaluation
    undecided = maybe - surely
    order = seeded_order(maybe, seed)
    chosen: list[int] = []
    start = 0
    while start < len(order) and (limit is None or len(chosen) < limit):
        size = len(order) if limit is None else chunk_size(limit - len(chosen), start, len(chosen))
        segment = order[start : start + size]
        evaluation.add([i for i in segment if i in undecided])
        passed = rule.select(replace(whole, universe=frozenset(segment)))  # exact: each prompt decides alone
        chosen += [i for i in segment if i in passed]
        start += len(segment)
    evaluation.record_coverage()
    chosen = sorted(chosen[:limit])  # the first ``limit`` in the seeded order: ``sample(selection, limit, seed)``
    selection = Selection([by_id[i] for i in chosen], len(by_id))
    if limit is None or len(chosen) >= limit:
        return selection
    return replace(selection, shortfall=shortfall(context, expression, selection, undecided, evaluation.ranks))


def shortfall(
    context: RunContext,
    expression: str,
    selection: Selection,
    evaluated: frozenset[int],
    ranks: Mapping[int, int],
) -> str:
    """Why fewer prompts than asked: how many pass, and how the model under study did on those it was
    evaluated on (every prompt whose selection depended on it)."""
    n = len(selection.prompts)
    why = ""
    if evaluated:
        scored = evaluated & ranks.keys()
        correct = sum(1 for i in scored if ranks[i] == 1)
        failed = len(evaluated) - len(scored)
        why = (
            f" ({short_model_name(context.loaded.name)} is top-1 correct on {correct} of the {len(scored)} "
            f"prompts evaluated{f'; {failed} could not be evaluated' if failed else ''})"
        )
    return (
        f"only {n} of the {selection.n_candidates} prompts of {context.dataset} pass {expression!r}{why}; running {n}"
    )


def sample_prompts(prompts: Sequence[FactPrompt], n: int | None, seed: int) -> list[FactPrompt]:
    """``n`` prompts drawn with ``seed`` (by prompt id, as ``filters.sample``); all of them when ``n`` is None."""
    by_id = {prompt.prompt_id: prompt for prompt in prompts}
    return [by_id[i] for i in sample(by_id, n, seed)]
