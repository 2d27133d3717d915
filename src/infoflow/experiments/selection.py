"""Choosing the prompts of a run: dataset, filter expression (evaluating the model first when the filter
needs it), then a seeded sample."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from infoflow.data.prompts import FactPrompt
from infoflow.experiments.experiments import evaluate
from infoflow.experiments.filters import FilterContext, FilterError, sample, select
from infoflow.experiments.runner import RunContext
from infoflow.store import ResultsStore


def latest_evaluate_ranks(store: ResultsStore, model: str, dataset: str) -> dict[int, int] | None:
    """{prompt_id: rank} of the most recent evaluate run of ``model`` on ``dataset``, or None."""
    runs = store.runs()
    if runs.empty:
        return None
    runs = runs[(runs["kind"] == "evaluate") & (runs["model_id"] == model) & (runs["dataset"] == dataset)]
    if runs.empty:
        return None
    run_id = runs.sort_values("updated_at")["run_id"].iloc[-1]
    frame = store.frame(run_id, "evaluate")
    return dict(zip(frame["prompt_id"].astype(int), frame["rank"].astype(int), strict=True))


def choose_prompts(
    context: RunContext,
    prompts: Sequence[FactPrompt],
    expression: str = "all",
    limit: int | None = None,
    seed: int = 0,
) -> list[FactPrompt]:
    """The prompts ``expression`` selects (evaluating the model under study on every prompt first if the
    expression asks for its ranks), then at most ``limit`` of them drawn with ``seed``."""
    by_id = {p.prompt_id: p for p in prompts}

    def ranks(model: str) -> dict[int, int]:
        if model == context.loaded.name:
            evaluate(replace(context, dataset_filter="all"), prompts)  # resumes: only new prompts run
        found = latest_evaluate_ranks(context.store, model, context.dataset)
        if found is None:
            raise FilterError(
                f"no evaluate results for model {model!r} on dataset {context.dataset!r}; "
                f"run `infoflow evaluate --model {model} --dataset {context.dataset}` first"
            )
        return found

    chosen = select(expression, FilterContext(universe=frozenset(by_id), model=context.loaded.name, ranks=ranks))
    return [by_id[i] for i in sample(chosen, limit, seed)]


def sample_prompts(prompts: Sequence[FactPrompt], n: int | None, seed: int) -> list[FactPrompt]:
    """``n`` prompts drawn with ``seed`` (by prompt id, as ``filters.sample``); all of them when ``n`` is None."""
    by_id = {prompt.prompt_id: prompt for prompt in prompts}
    return [by_id[i] for i in sample(by_id, n, seed)]
