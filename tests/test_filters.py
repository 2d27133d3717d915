"""Prompt filters: the expression language against an independent set semantics, errors, sampling, presets."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infoflow.experiments.filters import (
    FilterContext,
    FilterError,
    describe_selection,
    load_presets,
    parse_filter,
    sample,
    save_preset,
    seeded_order,
    select,
    tokenize,
)

UNIVERSE = frozenset(range(20))
# Ranks of the target per model; prompts 18 and 19 were never evaluated by "m", 42 lies outside the universe.
RANKS: dict[str, dict[int, int]] = {
    "m": {i: i % 7 + 1 for i in range(18)} | {42: 1},
    "gpt2-xl": {i: (3 * i) % 5 + 1 for i in range(20)},
    "state-spaces/mamba-130m-hf": {i: 1 if i % 2 else 9 for i in range(20)},
}
PRESETS = {"good": "correct and not ids(0)", "top2": "top(2)", "nested": "preset(good) or ids(19)"}


def ranks(model: str) -> dict[int, int]:
    if model not in RANKS:
        raise FilterError(f"no evaluate results for model {model!r}")
    return RANKS[model]


CONTEXT = FilterContext(universe=UNIVERSE, model="m", ranks=ranks)


def within(model: str, k: int) -> frozenset[int]:
    return frozenset(p for p, r in RANKS[model].items() if r <= k and p in UNIVERSE)


def run(expression: str, presets: dict[str, str] | None = None) -> frozenset[int]:
    return select(expression, CONTEXT, PRESETS if presets is None else presets)


# --- atoms ---


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("all", UNIVERSE),
        ("correct", within("m", 1)),
        ("top(3)", within("m", 3)),
        ("top(1)", within("m", 1)),
        ("top(0)", frozenset()),
        ("correct(gpt2-xl)", within("gpt2-xl", 1)),
        ("top(2, gpt2-xl)", within("gpt2-xl", 2)),
        ("correct(state-spaces/mamba-130m-hf)", within("state-spaces/mamba-130m-hf", 1)),
        ("all-correct(m, gpt2-xl)", within("m", 1) & within("gpt2-xl", 1)),
        (
            "all-correct(m, gpt2-xl, state-spaces/mamba-130m-hf)",
            within("m", 1) & within("gpt2-xl", 1) & within("state-spaces/mamba-130m-hf", 1),
        ),
        ("ids(3, 17, 42)", frozenset({3, 17})),  # 42 is not a prompt of the dataset
        ("ids(5)", frozenset({5})),
        ("preset(good)", within("m", 1) - {0}),
        ("preset(nested)", (within("m", 1) - {0}) | {19}),
    ],
)
def test_atoms(expression: str, expected: frozenset[int]) -> None:
    assert run(expression) == expected


def test_atom_sets_are_not_trivial() -> None:
    """The fixture distinguishes the atoms (so the tests above could fail)."""
    sets = [within("m", 1), within("m", 3), within("gpt2-xl", 1), UNIVERSE]
    assert len(set(sets)) == len(sets)
    assert frozenset() < within("m", 1) < within("m", 3) < UNIVERSE
    assert 18 not in run("top(7)") and 17 in run("top(7)")  # unevaluated prompts are never "within rank"


def test_operators_parentheses_and_precedence() -> None:
    a, b, c = within("m", 1), within("gpt2-xl", 1), frozenset({1, 2, 3, 7, 8})
    assert run("correct and correct(gpt2-xl)") == a & b
    assert run("correct or correct(gpt2-xl)") == a | b
    assert run("not correct") == UNIVERSE - a
    # and binds tighter than or; not binds tighter than and
    assert run("correct or correct(gpt2-xl) and ids(1, 2, 3, 7, 8)") == a | (b & c)
    assert run("(correct or correct(gpt2-xl)) and ids(1, 2, 3, 7, 8)") == (a | b) & c
    assert run("not correct and ids(1, 2, 3, 7, 8)") == (UNIVERSE - a) & c
    assert run("not (correct and ids(1, 2, 3, 7, 8))") == UNIVERSE - (a & c)
    assert (a | (b & c)) != ((a | b) & c)  # the precedence checks above can tell the two parses apart


def test_keywords_are_case_insensitive_and_whitespace_free() -> None:
    assert run("NOT Correct AND Top(3)") == run("not correct and top(3)")
    assert run("  ids( 1 ,2,   3 )or(ids(4))") == frozenset({1, 2, 3, 4})


def test_model_lookup_errors_propagate() -> None:
    with pytest.raises(FilterError, match="no evaluate results for model 'nobody'"):
        run("correct(nobody)")


def test_lookup_only_for_models_the_expression_names() -> None:
    asked: list[str] = []

    def recording(model: str) -> dict[int, int]:
        asked.append(model)
        return ranks(model)

    context = FilterContext(universe=UNIVERSE, model="m", ranks=recording)
    select("ids(1) or correct(gpt2-xl)", context, {})
    assert asked == ["gpt2-xl"]
    asked.clear()
    select("ids(1, 2) and not ids(2)", context, {})
    assert asked == []


# --- errors ---


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty filter expression"),
        ("   ", "empty filter expression"),
        ("correct and", "expected more"),
        ("correct or", "expected more"),
        ("not", "expected more"),
        ("(correct", "expected ')'"),
        ("correct)", "unexpected ')'"),
        ("correct correct", "unexpected 'correct'"),
        ("bogus", "unknown filter 'bogus'"),
        ("top", "filter 'top' needs arguments"),
        ("ids", "filter 'ids' needs arguments"),
        ("all-correct", "filter 'all-correct' needs arguments"),
        ("preset", "filter 'preset' needs arguments"),
        ("ids(a)", "expected a number"),
        ("top(-1)", "expected a number"),
        ("top(x)", "expected a number"),
        ("ids(1, )", "expected an argument in filter 'ids(1, )', found ')'"),
        ("top()", "expected an argument in filter 'top()', found ')'"),
        ("correct()", "found ')'"),
        ("ids(1 2)", "expected ')'"),
        ("correct & ids(1)", "cannot read filter"),
        ("preset(missing)", "no preset named 'missing'"),
        ("all(1)", "filter 'all' takes at most 0 argument(s), got 1"),
        ("correct(m, gpt2-xl)", "filter 'correct' takes at most 1 argument(s), got 2"),
        ("top(1, m, gpt2-xl)", "filter 'top' takes at most 2 argument(s), got 3"),
        ("preset(good, top2)", "filter 'preset' takes at most 1 argument(s), got 2"),
    ],
)
def test_malformed_expressions_raise_clear_errors(expression: str, message: str) -> None:
    with pytest.raises(FilterError, match=re.escape(message)) as info:
        run(expression)
    assert isinstance(info.value, ValueError)  # the CLI turns ValueErrors into one-line messages


@pytest.mark.parametrize(
    "expression", ["correct and bogus", "correct(gpt2-xl) or top(x)", "top(2) and preset(missing)", "correct and ("]
)
def test_every_mistake_is_found_before_any_lookup(expression: str) -> None:
    def no_lookup(model: str) -> dict[int, int]:
        raise AssertionError(f"looked up {model}")

    with pytest.raises(FilterError):
        parse_filter(expression, PRESETS)
    with pytest.raises(FilterError):
        select(expression, FilterContext(universe=UNIVERSE, model="m", ranks=no_lookup), PRESETS)


def test_describe_selection_checks_the_expression(presets_file: Path) -> None:
    assert describe_selection("correct", None, 0) == "correct"
    assert describe_selection("correct", 5, 2) == "correct | sample 5 by hash (seed 2)"
    with pytest.raises(FilterError, match="unknown filter 'corect'"):
        describe_selection("corect", 5, 2)
    with pytest.raises(FilterError, match="no preset named 'mine'"):
        describe_selection("preset(mine)", None, 0)
    save_preset("mine", "top(2)")
    assert describe_selection("preset(mine)", None, 0) == "preset(mine)"


def test_recursive_presets_terminate_with_an_error() -> None:
    with pytest.raises(FilterError, match="no preset named 'me'"):
        run("preset(me)", {"me": "correct or preset(me)"})
    with pytest.raises(FilterError, match="no preset named"):
        run("preset(a)", {"a": "preset(b)", "b": "preset(a)"})


def test_tokenize() -> None:
    expected = ["top", "(", "5", ",", "gpt2-xl", ")", "or", "not", "ids", "(", "3", ")"]
    assert tokenize(" top(5, gpt2-xl) or not ids(3) ") == expected
    assert tokenize("ids(3)") == ["ids", "(", "3", ")"]
    with pytest.raises(FilterError, match="at ' @x'"):
        tokenize("ids(1) @x")


# --- an independent evaluator, and properties ---


@dataclass(frozen=True)
class Node:
    op: str  # "atom", "not", "and", "or"
    text: str = ""
    value: frozenset[int] = frozenset()
    children: tuple[Node, ...] = ()


ATOMS = [
    ("all", UNIVERSE),
    ("correct", within("m", 1)),
    ("top(2)", within("m", 2)),
    ("top(4)", within("m", 4)),
    ("correct(gpt2-xl)", within("gpt2-xl", 1)),
    ("top(3, gpt2-xl)", within("gpt2-xl", 3)),
    ("all-correct(m, state-spaces/mamba-130m-hf)", within("m", 1) & within("state-spaces/mamba-130m-hf", 1)),
    ("ids(0, 4, 9, 13, 19, 77)", frozenset({0, 4, 9, 13, 19})),
    ("ids(2)", frozenset({2})),
    ("preset(top2)", within("m", 2)),
    ("preset(nested)", (within("m", 1) - {0}) | {19}),
]
PRECEDENCE = {"or": 1, "and": 2, "not": 3, "atom": 4}


def evaluate(node: Node) -> frozenset[int]:
    if node.op == "atom":
        return node.value
    if node.op == "not":
        return UNIVERSE - evaluate(node.children[0])
    left, right = (evaluate(c) for c in node.children)
    return left & right if node.op == "and" else left | right


def render(node: Node, minimal: bool, parent: int = 0) -> str:
    """Text of an expression tree; ``minimal`` adds only the parentheses precedence needs."""
    if node.op == "atom":
        return node.text
    if node.op == "not":
        text = "not " + render(node.children[0], minimal, PRECEDENCE["not"])
    else:
        # and / or are associative, so an operand of the same operator needs no parentheses either side
        left, right = (render(c, minimal, PRECEDENCE[node.op]) for c in node.children)
        text = f"{left} {node.op} {right}"
    return f"({text})" if not minimal or PRECEDENCE[node.op] < parent else text


def trees() -> st.SearchStrategy[Node]:
    leaves = st.sampled_from(ATOMS).map(lambda a: Node("atom", a[0], a[1]))

    def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        unary = children.map(lambda c: Node("not", children=(c,)))
        binary = st.tuples(st.sampled_from(["and", "or"]), children, children).map(
            lambda t: Node(t[0], children=(t[1], t[2]))
        )
        return unary | binary

    return st.recursive(leaves, extend, max_leaves=8)


expressions = trees()


@settings(max_examples=150, deadline=None, derandomize=True)
@given(tree=expressions, minimal=st.booleans())
def test_parser_matches_set_semantics(tree: Node, minimal: bool) -> None:
    assert run(render(tree, minimal)) == evaluate(tree)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(x=expressions, y=expressions)
def test_algebraic_laws(x: Node, y: Node) -> None:
    sx, sy = render(x, True), render(y, True)
    x_set, y_set = run(sx), run(sy)
    assert run(f"not not ({sx})") == x_set
    assert run(f"({sx}) and ({sy})") == x_set & y_set <= x_set
    assert run(f"({sx}) or ({sy})") == x_set | y_set >= x_set
    assert run(f"not (({sx}) and ({sy}))") == run(f"not ({sx}) or not ({sy})")  # De Morgan
    assert run(f"not (({sx}) or ({sy}))") == run(f"not ({sx}) and not ({sy})")
    assert run(f"({sx}) and not ({sx})") == frozenset()
    assert run(f"({sx}) or not ({sx})") == UNIVERSE
    assert x_set <= UNIVERSE


@settings(max_examples=80, deadline=None, derandomize=True)
@given(tree=expressions, ranks_of_m=st.dictionaries(st.integers(0, 19), st.integers(1, 8)))
def test_bounds_hold_whatever_the_pending_model_ranks(tree: Node, ranks_of_m: dict[int, int]) -> None:
    """With the ranks of "m" pending, surely <= the selection for any ranks of "m" <= maybe, "m" unread."""
    rule = parse_filter(render(tree, True), PRESETS)

    def without_m(model: str) -> dict[int, int]:
        assert model != "m", "the pending model's ranks were read"
        return ranks(model)

    surely, maybe = rule.bounds(FilterContext(UNIVERSE, "m", without_m), pending="m")
    some_ranks = FilterContext(UNIVERSE, "m", lambda model: ranks_of_m if model == "m" else RANKS[model])
    assert surely <= rule.select(some_ranks) <= maybe
    assert surely <= run(render(tree, True)) <= maybe


@settings(max_examples=80, deadline=None, derandomize=True)
@given(tree=expressions, part=st.frozensets(st.integers(0, 19)))
def test_a_filter_on_part_of_the_dataset_selects_that_part_of_its_selection(tree: Node, part: frozenset[int]) -> None:
    rule = parse_filter(render(tree, True), PRESETS)
    assert rule.select(FilterContext(part, "m", ranks)) == evaluate(tree) & part


# --- sampling ---


def test_sample_is_seeded_sorted_and_a_subset() -> None:
    ids = set(range(0, 300, 3))
    first = sample(ids, 10, seed=1)
    assert first == sample(list(reversed(sorted(ids))), 10, seed=1)  # the order of the input does not matter
    assert len(first) == 10 == len(set(first))
    assert set(first) <= ids
    assert first == sorted(first)
    draws = {tuple(sample(ids, 10, seed=s)) for s in range(5)}
    assert len(draws) > 1  # the seed changes the draw


def test_sample_keeps_everything_when_not_limited() -> None:
    assert sample({5, 1, 3}, None, seed=0) == [1, 3, 5]
    assert sample({5, 1, 3}, 3, seed=0) == [1, 3, 5]
    assert sample({5, 1, 3}, 99, seed=4) == [1, 3, 5]
    assert sample(set(), 2, seed=0) == []


@settings(max_examples=50, deadline=None, derandomize=True)
@given(ids=st.sets(st.integers(0, 10_000), max_size=60), n=st.integers(0, 70), seed=st.integers(0, 2**32))
def test_sample_properties(ids: set[int], n: int, seed: int) -> None:
    drawn = sample(ids, n, seed)
    assert drawn == sorted(set(drawn))
    assert set(drawn) <= ids
    assert len(drawn) == min(n, len(ids))
    assert drawn == sample(sorted(ids, reverse=True), n, seed)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    ids=st.sets(st.integers(-50, 10_000), max_size=60),
    keep=st.sets(st.integers(-50, 10_000), max_size=60),
    n=st.integers(0, 70),
    seed=st.integers(-(2**70), 2**70),
)
def test_the_sample_of_a_subset_is_found_walking_the_whole_order(
    ids: set[int], keep: set[int], n: int, seed: int
) -> None:
    """What makes a limited selection need only part of the dataset: sampling the ids that pass a filter is
    taking the first ``n`` that pass in the seeded order of all ids."""
    subset = ids & keep
    walked = [i for i in seeded_order(ids, seed) if i in subset][:n]
    assert sample(subset, n, seed) == sorted(walked)
    assert seeded_order(ids, seed) == seeded_order(sorted(ids, reverse=True), seed)


def test_seeded_order_is_fixed() -> None:
    """The order is part of what a run's manifest means ("sample N by hash (seed S)"): it must never change."""
    assert seeded_order(range(10), 0) == [0, 6, 4, 9, 8, 2, 5, 3, 7, 1]
    assert seeded_order(range(10), 1) == [0, 9, 7, 8, 1, 4, 3, 5, 6, 2]


# --- presets ---


@pytest.fixture
def presets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config" / "presets.json"
    monkeypatch.setenv("INFOFLOW_PRESETS", str(path))
    return path


def test_presets_round_trip(presets_file: Path) -> None:
    assert load_presets() == {}
    assert save_preset("mine", "correct and not ids(0)") == presets_file
    save_preset("wide", "top(4) or preset(mine)")
    assert load_presets() == {"mine": "correct and not ids(0)", "wide": "top(4) or preset(mine)"}
    assert json.loads(presets_file.read_text()) == load_presets()
    save_preset("mine", "ids(1)")  # overwrite
    assert load_presets()["mine"] == "ids(1)"
    # select() reads the saved presets by default
    assert select("preset(wide)", CONTEXT) == within("m", 4) | {1}


@pytest.mark.parametrize("name", ["has space", "", "semi;colon", "ünï"])
def test_preset_names_are_checked(presets_file: Path, name: str) -> None:
    with pytest.raises(FilterError, match="preset names"):
        save_preset(name, "correct")
    assert not presets_file.exists()


@pytest.mark.parametrize("expression", ["correct and", "(correct", "top(1", "correct $", "", "correct)"])
def test_malformed_presets_are_not_saved(presets_file: Path, expression: str) -> None:
    with pytest.raises(FilterError):
        save_preset("bad", expression)
    assert "bad" not in load_presets()


@pytest.mark.parametrize(
    ("content", "message"), [("{not json", "not valid JSON"), ('["a"]', "must map names"), ('{"a": 1}', "must map")]
)
def test_broken_presets_file(presets_file: Path, content: str, message: str) -> None:
    presets_file.parent.mkdir(parents=True)
    presets_file.write_text(content)
    with pytest.raises(FilterError, match=message):
        load_presets()
