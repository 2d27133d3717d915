"""Prompt selection with a limit: the sample of the filter's selection over the whole dataset (computed here from
independent clean forwards), found by evaluating only part of the dataset, the same whether or not
evaluations were stored; filters checked before any work; a shortfall said and recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from infoflow.data.prompts import FactPrompt
from infoflow.data.spans import PromptError, find_spans
from infoflow.engines.fast import FastEngine
from infoflow.experiments.evaluate import evaluate
from infoflow.experiments.filters import FilterError, sample
from infoflow.experiments.runner import RunContext
from infoflow.experiments.selection import MIN_CHUNK, Selection, choose, chunk_size
from infoflow.models import load_model
from infoflow.models.load import LoadedModel
from infoflow.store import ResultsStore
from tests.cli_support import MODEL, invoke, wide_consoles, write_facts_csv

N_FACTS = 120
BROKEN = 10_000  # a prompt whose subject is not in its text: it cannot be evaluated


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_model(MODEL)


@pytest.fixture(scope="module")
def facts() -> list[FactPrompt]:
    """Synthetic facts, every third with another fact's target (which the built-in model gets wrong), and one
    prompt that cannot be evaluated."""
    from infoflow.data import load_dataset

    prompts = load_dataset("synthetic")[:N_FACTS]
    targets = [p.target for p in prompts]
    wrong = [
        replace(p, target=next(t for t in targets[i + 1 :] + targets if t != p.target)) if i % 3 == 0 else p
        for i, p in enumerate(prompts)
    ]
    return [*wrong, FactPrompt(BROKEN, "The capital of nowhere is", "somewhere", " x")]


@pytest.fixture(scope="module")
def oracle_ranks(loaded: LoadedModel, facts: list[FactPrompt]) -> dict[int, int]:
    """Rank of each target after one plain forward of each prompt alone (no batching, no store)."""
    ranks = {}
    for prompt in facts:
        try:
            spans = find_spans(loaded.tokenizer, prompt)
        except PromptError:
            continue
        with torch.no_grad():
            probabilities = torch.softmax(loaded.model(torch.tensor([spans.input_ids]))[0, -1].double(), -1)
        ranks[prompt.prompt_id] = 1 + int((probabilities > probabilities[spans.target_id]).sum())
    return ranks


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[[str], ResultsStore]]:
    stores: list[ResultsStore] = []

    def opened(name: str = "results") -> ResultsStore:
        stores.append(ResultsStore.open(tmp_path / f"{name}.duckdb"))
        return stores[-1]

    yield opened
    for store in stores:
        store.close()


def context_of(loaded: LoadedModel, store: ResultsStore, name: str | None = None) -> RunContext:
    model = loaded if name is None else replace(loaded, name=name)  # the same weights under another name
    return RunContext(model, FastEngine(loaded.model), store, "facts", "described", show_progress=False)


def ids_of(selection: Selection) -> list[int]:
    return [p.prompt_id for p in selection.prompts]


def evaluated_ids(store: ResultsStore, name: str = MODEL) -> set[int]:
    runs = store.runs()
    runs = runs[(runs["kind"] == "evaluate") & (runs["model_id"] == name)]
    return {i for run_id in runs["run_id"] for i in store.completed_prompts(run_id)}


def test_the_fixture_has_both_kinds_of_prompt(oracle_ranks: dict[int, int]) -> None:
    correct = sum(rank == 1 for rank in oracle_ranks.values())
    assert 20 < correct < N_FACTS - 20 and BROKEN not in oracle_ranks
    assert max(oracle_ranks.values()) > 3  # top(3) differs from correct


# expression -> the set it selects, from the oracle's ranks of the model under study
EXPECTED: dict[str, Callable[[dict[int, int], frozenset[int]], frozenset[int]]] = {
    "correct": lambda r, u: frozenset(i for i, k in r.items() if k == 1),
    "not correct": lambda r, u: u - {i for i, k in r.items() if k == 1},
    "top(3) and not ids(3, 4, 5, 6)": lambda r, u: frozenset(i for i, k in r.items() if k <= 3) - {3, 4, 5, 6},
    "correct or ids(0, 3, 6)": lambda r, u: frozenset(i for i, k in r.items() if k == 1) | {0, 3, 6},
}


@pytest.mark.parametrize("expression", list(EXPECTED))
def test_limited_selection_is_the_sample_of_the_whole_selection(
    expression: str,
    loaded: LoadedModel,
    facts: list[FactPrompt],
    oracle_ranks: dict[int, int],
    open_store: Callable[[str], ResultsStore],
) -> None:
    whole = EXPECTED[expression](oracle_ranks, frozenset(p.prompt_id for p in facts))
    context = context_of(loaded, open_store("results"))
    for limit, seed in [(3, 0), (3, 5), (17, 1), (None, 0)]:
        selection = choose(context, facts, expression, limit, seed)
        assert ids_of(selection) == sample(whole, limit, seed), (limit, seed)
        assert selection.shortfall is None
    assert sample(whole, 3, 0) != sample(whole, 3, 5)  # the seed matters


def test_a_limit_evaluates_only_part_of_the_dataset(
    loaded: LoadedModel, facts: list[FactPrompt], open_store: Callable[[str], ResultsStore]
) -> None:
    store = open_store("results")
    choose(context_of(loaded, store), facts, "correct", 3, seed=0)
    evaluated = evaluated_ids(store)
    assert len(evaluated) == MIN_CHUNK < len(facts)  # one chunk holds 3 correct prompts here
    (run,) = [store.run(r) for r in store.runs()["run_id"]]
    assert run.manifest.dataset_filter == "all" and run.status == "partial"
    assert run.message == f"evaluated on {MIN_CHUNK} of {len(facts)} prompts, as far as a prompt selection needed"
    # the whole dataset, when asked for, resumes into the same evaluate run and completes it
    choose(context_of(loaded, store), facts, "correct", None, seed=0)
    (run,) = [store.run(r) for r in store.runs()["run_id"]]
    assert run.status == "complete" and evaluated_ids(store) == {p.prompt_id for p in facts}


@pytest.mark.parametrize(
    ("expression", "needs"),
    [
        ("ids(1, 2, 40)", set()),
        ("all", set()),
        ("top(0)", set()),
        ("correct and ids(1, 2, 40)", {1, 2, 40}),
        ("not (correct or not ids(5, 7))", {5, 7}),
    ],
)
def test_only_prompts_whose_selection_depends_on_the_model_are_evaluated(
    expression: str,
    needs: set[int],
    loaded: LoadedModel,
    facts: list[FactPrompt],
    open_store: Callable[[str], ResultsStore],
) -> None:
    store = open_store("results")
    choose(context_of(loaded, store), facts, expression, None, seed=0)
    assert evaluated_ids(store) == needs


def test_the_sample_does_not_depend_on_stored_evaluations(
    loaded: LoadedModel, facts: list[FactPrompt], open_store: Callable[[str], ResultsStore]
) -> None:
    fresh, partly, fully = open_store("fresh"), open_store("partly"), open_store("fully")
    evaluate(replace(context_of(loaded, partly), dataset_filter="all"), sample_of(facts, 45, seed=9))
    evaluate(replace(context_of(loaded, fully), dataset_filter="all"), facts)
    for expression, limit, seed in [("correct", 5, 0), ("not correct", 4, 3), ("top(2)", 30, 11)]:
        drawn = [ids_of(choose(context_of(loaded, s), facts, expression, limit, seed)) for s in (fresh, partly, fully)]
        assert drawn[0] == drawn[1] == drawn[2] and len(drawn[0]) == limit, (expression, drawn)
        assert ids_of(choose(context_of(loaded, fresh), facts, expression, limit, seed)) == drawn[0]


def sample_of(prompts: list[FactPrompt], n: int, seed: int) -> list[FactPrompt]:
    chosen = set(sample((p.prompt_id for p in prompts), n, seed))
    return [p for p in prompts if p.prompt_id in chosen]


def test_filters_on_other_models_evaluations(
    loaded: LoadedModel,
    facts: list[FactPrompt],
    oracle_ranks: dict[int, int],
    open_store: Callable[[str], ResultsStore],
) -> None:
    store = open_store("results")
    evaluate(replace(context_of(loaded, store, name="other"), dataset_filter="all"), facts[:60])  # same weights
    correct = frozenset(i for i, k in oracle_ranks.items() if k == 1)
    by_other = correct & {p.prompt_id for p in facts[:60]}
    context = context_of(loaded, store)
    assert ids_of(choose(context, facts, "correct(other)", 4, 2)) == sample(by_other, 4, 2)
    assert ids_of(choose(context, facts, "correct and not correct(other)", 5, 2)) == sample(correct - by_other, 5, 2)
    assert ids_of(choose(context, facts, f"all-correct(other, {MODEL})", None, 0)) == sorted(by_other)


def test_another_models_partial_evaluation_is_refused_until_completed(
    loaded: LoadedModel,
    facts: list[FactPrompt],
    oracle_ranks: dict[int, int],
    open_store: Callable[[str], ResultsStore],
) -> None:
    """A selection for model "other" evaluates it only in part; a filter on its results must not read the
    prompts it lacks as wrong."""
    store = open_store("results")
    choose(context_of(loaded, store, name="other"), facts, "correct", 2, seed=0)
    with pytest.raises(FilterError) as error:
        choose(context_of(loaded, store), facts, "correct(other)", 5, seed=0)
    assert str(error.value) == (
        "the evaluate results of model 'other' on dataset 'facts' are partial (evaluated on "
        f"{MIN_CHUNK} of {len(facts)} prompts, as far as a prompt selection needed); "
        "run `infoflow evaluate --model other --dataset facts` to complete them"
    )
    evaluate(replace(context_of(loaded, store, name="other"), dataset_filter="all"), facts)  # what that command does
    correct = frozenset(i for i, k in oracle_ranks.items() if k == 1)
    assert ids_of(choose(context_of(loaded, store), facts, "correct(other)", 5, seed=0)) == sample(correct, 5, 0)


@pytest.mark.parametrize("expression", ["correct(nobody)", "correct and correct(nobody)", "not top(2, nobody)"])
def test_missing_evaluations_of_another_model_fail_before_any_evaluation(
    expression: str, loaded: LoadedModel, facts: list[FactPrompt], open_store: Callable[[str], ResultsStore]
) -> None:
    store = open_store("results")
    with pytest.raises(FilterError, match="no evaluate results for model 'nobody' on dataset 'facts'; run `infoflow"):
        choose(context_of(loaded, store), facts, expression, 3, seed=0)
    assert store.runs().empty


def test_a_shortfall_is_said_with_why(
    loaded: LoadedModel,
    facts: list[FactPrompt],
    oracle_ranks: dict[int, int],
    open_store: Callable[[str], ResultsStore],
) -> None:
    ids = [0, 1, 2, 3, 4, BROKEN]  # 0 and 3 have wrong targets
    assert [oracle_ranks.get(i) == 1 for i in ids] == [False, True, True, False, True, False]
    expression = f"correct and ids({', '.join(map(str, ids))})"
    selection = choose(context_of(loaded, open_store("results")), facts, expression, 10, seed=0)
    assert ids_of(selection) == [1, 2, 4]
    assert selection.shortfall == (
        f"only 3 of the {len(facts)} prompts of facts pass {expression!r} "
        f"({MODEL} is top-1 correct on 3 of the 5 prompts evaluated; 1 could not be evaluated); running 3"
    )
    assert selection.recorded("X | sample 10") == f"X | sample 10; only 3 of {len(facts)} pass"
    enough = choose(context_of(loaded, open_store("other")), facts, expression, 3, seed=0)
    assert enough.shortfall is None and enough.recorded("X") == "X"


def test_chunk_size() -> None:
    assert chunk_size(wanted=20, examined=0, passed=0) == 80
    assert chunk_size(wanted=3, examined=0, passed=0) == MIN_CHUNK
    assert chunk_size(wanted=16, examined=64, passed=0) == 64  # none passed yet: twice as far
    assert chunk_size(wanted=10, examined=100, passed=5) == 300  # 1 in 20 pass: 200 expected, 1.5 x margin
    assert chunk_size(wanted=1, examined=100, passed=99) == MIN_CHUNK


# --- the command line ---


@pytest.fixture
def cli_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    wide_consoles(monkeypatch)
    monkeypatch.setenv("INFOFLOW_PRESETS", str(tmp_path / "presets.json"))
    return write_facts_csv(tmp_path)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("correct and bogus", "unknown filter 'bogus'"),
        ("correct and (top(2)", "expected ')'"),
        ("correct(a, b)", "filter 'correct' takes at most 1 argument(s), got 2"),
        ("correct or preset(nope)", "no preset named 'nope'; saved presets: none"),
    ],
)
@pytest.mark.parametrize("command", ["evaluate", "info-flow", "heatmap", "attention"])
def test_a_bad_filter_fails_before_the_model_loads(
    command: str,
    expression: str,
    message: str,
    cli_environment: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("infoflow.models.load_model", no_loading)
    monkeypatch.setattr("infoflow.models.load.load_model", no_loading)
    store = tmp_path / "results.duckdb"
    result = invoke(command, "-m", MODEL, "-d", cli_environment, "--store", store, "--filter", expression, code=1)
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not store.exists()


def test_the_command_line_says_and_records_a_shortfall(cli_environment: Path, tmp_path: Path) -> None:
    store = tmp_path / "results.duckdb"
    result = invoke("evaluate", "-m", MODEL, "-d", cli_environment, "--store", store, "--filter", "ids(1, 2)", "-n", 5)
    dataset = str(cli_environment)
    assert f"note: only 2 of the 6 prompts of {dataset} pass 'ids(1, 2)'; running 2" in result.output
    with ResultsStore.open(store, read_only=True) as results:
        (run_filter,) = results.runs()["dataset_filter"]
    assert run_filter == "ids(1, 2) | sample 5 by hash (seed 0); only 2 of 6 pass"
    enough = invoke("evaluate", "-m", MODEL, "-d", cli_environment, "--store", store, "--filter", "ids(1, 2)", "-n", 2)
    assert "note:" not in enough.output
