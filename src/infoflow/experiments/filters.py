"""Prompt filters: small expressions over evaluate results, combined with and / or / not, saved as presets.

    all                      every prompt of the dataset
    correct                  the model under study ranks the target first   (correct(MODEL): another model)
    top(K)                   the target is within the top K                 (top(K, MODEL))
    all-correct(M1, M2, ...) every listed model is correct
    ids(3, 17, 42)           explicit prompt ids
    preset(NAME)             a saved filter
    e.g.  "correct and not ids(13190)",  "top(5) or correct(gpt2-xl)"

``parse_filter`` reads an expression into a tree (presets expanded), so that every mistake is found before
any work; the tree then selects prompt ids given the evaluate results (``FilterContext``). Every filter
decides each prompt on that prompt's own results, so a filter applied to part of a dataset selects exactly
that part of its selection over the whole dataset; ``Filter.bounds`` says which prompts a filter selects
whatever the ranks of one model not yet evaluated, and which need them.

``sample(ids, n, seed)`` draws a reproducible subset: the ``n`` ids first in a seeded hash order. The order
of an id does not depend on the other ids, so the sample of a filtered set is the first ``n`` ids of the
whole dataset's order that pass the filter, found without evaluating the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

RankLookup = Callable[[str], Mapping[int, int]]  # model id -> {prompt_id: rank of the target}
Bounds = tuple[frozenset[int], frozenset[int]]  # (surely selected, maybe selected) prompt ids
TOKEN = re.compile(r"\s*(?:(?P<word>[A-Za-z0-9_.\-/:]+)|(?P<punct>[(),]))")


class FilterError(ValueError):
    """A filter expression that cannot be parsed or evaluated; the message says why."""


@dataclass(frozen=True)
class FilterContext:
    universe: frozenset[int]  # every prompt id considered (the dataset, or part of it)
    model: str  # the model under study, for bare ``correct`` / ``top(K)``
    ranks: RankLookup


# --- the parsed expression: set operations over prompt ids ---


class Filter(ABC):
    """A parsed filter expression."""

    @abstractmethod
    def bounds(self, context: FilterContext, pending: str | None = None) -> Bounds:
        """(surely, maybe): the prompts selected whatever the ranks of model ``pending`` turn out to be, and
        those selected for some ranks of it (its ranks are not looked up); surely == maybe when no atom
        reads ``pending``."""

    def select(self, context: FilterContext) -> frozenset[int]:
        """The prompt ids of ``context.universe`` this filter selects."""
        return self.bounds(context)[0]


@dataclass(frozen=True)
class Everything(Filter):
    def bounds(self, context: FilterContext, pending: str | None = None) -> Bounds:
        return context.universe, context.universe


@dataclass(frozen=True)
class Ids(Filter):
    ids: frozenset[int]

    def bounds(self, context: FilterContext, pending: str | None = None) -> Bounds:
        chosen = self.ids & context.universe
        return chosen, chosen


@dataclass(frozen=True)
class WithinRank(Filter):
    """The target is among the ``k`` most probable next tokens of ``model`` (None: the model under study)."""

    k: int
    model: str | None = None

    def bounds(self, context: FilterContext, pending: str | None = None) -> Bounds:
        model = self.model or context.model
        if model == pending:
            return frozenset(), context.universe if self.k >= 1 else frozenset()
        ranks = context.ranks(model)
        chosen = frozenset(p for p, rank in ranks.items() if rank <= self.k) & context.universe
        return chosen, chosen


@dataclass(frozen=True)
class Not(Filter):
    operand: Filter

    def bounds(self, context: FilterContext, pending: str | None = None) -> Bounds:
        surely, maybe = self.operand.bounds(context, pending)
        return context.universe - maybe, context.universe - surely


@dataclass(frozen=True)
class And(Filter):
    left: Filter
    right: Filter

    def bounds(self, context: FilterContext, pending: str | None = None) -> Bounds:
        (left_surely, left_maybe), (right_surely, right_maybe) = (
            side.bounds(context, pending) for side in (self.left, self.right)
        )
        return left_surely & right_surely, left_maybe & right_maybe


@dataclass(frozen=True)
class Or(Filter):
    left: Filter
    right: Filter

    def bounds(self, context: FilterContext, pending: str | None = None) -> Bounds:
        (left_surely, left_maybe), (right_surely, right_maybe) = (
            side.bounds(context, pending) for side in (self.left, self.right)
        )
        return left_surely | right_surely, left_maybe | right_maybe


# --- parsing ---


def tokenize(expression: str) -> list[str]:
    tokens, position = [], 0
    expression = expression.strip()
    while position < len(expression):
        match = TOKEN.match(expression, position)
        if not match or match.end() == position:
            raise FilterError(f"cannot read filter {expression!r} at {expression[position:]!r}")
        tokens.append(match.group("word") or match.group("punct"))
        position = match.end()
    return tokens


# atom name -> (least, most) arguments; None: any number
ARITY: dict[str, tuple[int, int | None]] = {
    "all": (0, 0),
    "correct": (0, 1),
    "top": (1, 2),
    "all-correct": (1, None),
    "ids": (1, None),
    "preset": (1, 1),
}


class Parser:
    """Recursive descent: or_expr := and_expr ('or' and_expr)*; and_expr := unary ('and' unary)*;
    unary := 'not' unary | '(' or_expr ')' | atom."""

    def __init__(self, expression: str, presets: Mapping[str, str]) -> None:
        self.expression, self.presets = expression, presets
        self.tokens, self.position = tokenize(expression), 0

    def parse(self) -> Filter:
        if not self.tokens:
            raise FilterError("empty filter expression")
        result = self.or_expr()
        if self.position != len(self.tokens):
            raise FilterError(f"unexpected {self.tokens[self.position]!r} in filter {self.expression!r}")
        return result

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token.lower() != expected):
            wanted = f"{expected!r}" if expected else "more"
            raise FilterError(f"expected {wanted} in filter {self.expression!r}, found {token!r}")
        self.position += 1
        return token

    def or_expr(self) -> Filter:
        result = self.and_expr()
        while (self.peek() or "").lower() == "or":
            self.take()
            result = Or(result, self.and_expr())
        return result

    def and_expr(self) -> Filter:
        result = self.unary()
        while (self.peek() or "").lower() == "and":
            self.take()
            result = And(result, self.unary())
        return result

    def unary(self) -> Filter:
        token = (self.peek() or "").lower()
        if token == "not":
            self.take()
            return Not(self.unary())
        if token == "(":
            self.take()
            result = self.or_expr()
            self.take(")")
            return result
        return self.atom()

    def arguments(self) -> list[str]:
        if self.peek() != "(":
            return []
        self.take("(")
        args = [self.argument()]
        while self.peek() == ",":
            self.take(",")
            args.append(self.argument())
        self.take(")")
        return args

    def argument(self) -> str:
        token = self.peek()
        if token in ("(", ")", ","):
            raise FilterError(f"expected an argument in filter {self.expression!r}, found {token!r}")
        return self.take()

    def atom(self) -> Filter:
        name = self.take().lower()
        if name not in ARITY:
            raise FilterError(f"unknown filter {name!r}; known: {', '.join(ARITY)}")
        args = self.arguments()
        least, most = ARITY[name]
        if len(args) < least:
            raise FilterError(f"filter {name!r} needs arguments, e.g. {name}(...)")
        if most is not None and len(args) > most:
            raise FilterError(f"filter {name!r} takes at most {most} argument(s), got {len(args)}: {args}")
        if name == "all":
            return Everything()
        if name == "correct":
            return WithinRank(1, args[0] if args else None)
        if name == "top":
            return WithinRank(self.integer(args[0]), args[1] if len(args) > 1 else None)
        if name == "all-correct":
            models = [WithinRank(1, model) for model in args]
            result = models[0]
            for model in models[1:]:
                result = And(result, model)
            return result
        if name == "ids":
            return Ids(frozenset(self.integer(i) for i in args))
        return self.preset(args[0])

    def integer(self, text: str) -> int:
        if not text.isdigit():
            raise FilterError(f"expected a number in filter {self.expression!r}, found {text!r}")
        return int(text)

    def preset(self, name: str) -> Filter:
        if name not in self.presets:
            raise FilterError(f"no preset named {name!r}; saved presets: {', '.join(sorted(self.presets)) or 'none'}")
        inner = {k: v for k, v in self.presets.items() if k != name}  # a preset cannot use itself
        return Parser(self.presets[name], inner).parse()


def parse_filter(expression: str, presets: Mapping[str, str] | None = None) -> Filter:
    """The filter an expression describes, with its presets (default: the saved ones) expanded. Raises
    ``FilterError`` for any mistake (syntax, unknown filter or preset, wrong arguments), so a command can
    check its filter before it loads a model or evaluates anything."""
    return Parser(expression, presets if presets is not None else load_presets()).parse()


def select(expression: str, context: FilterContext, presets: Mapping[str, str] | None = None) -> frozenset[int]:
    """The prompt ids an expression selects."""
    return parse_filter(expression, presets).select(context)


# --- sampling ---


def hash_order(prompt_id: int, seed: int) -> tuple[bytes, int]:
    """Where ``prompt_id`` comes in the seeded order (a hash of seed and id, then the id for ties)."""
    return hashlib.blake2b(f"{seed}/{prompt_id}".encode(), digest_size=8).digest(), prompt_id


def seeded_order(ids: Iterable[int], seed: int) -> list[int]:
    """``ids`` in the seeded hash order: the order of two ids never depends on the other ids."""
    return sorted(ids, key=lambda i: hash_order(i, seed))


def sample(ids: Iterable[int], n: int | None, seed: int) -> list[int]:
    """``n`` distinct ids drawn with ``seed`` (the first ``n`` in the seeded order), sorted; all ids, sorted,
    when ``n`` is None or not smaller."""
    ordered = seeded_order(set(ids), seed)
    return sorted(ordered if n is None else ordered[:n])


# --- presets ---


def presets_path() -> Path:
    return Path(os.environ.get("INFOFLOW_PRESETS", Path.home() / ".config" / "infoflow" / "presets.json"))


def load_presets() -> dict[str, str]:
    path = presets_path()
    if not path.exists():
        return {}
    try:
        presets = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise FilterError(f"presets file {path} is not valid JSON ({error}); fix or delete it") from error
    if not isinstance(presets, dict) or not all(isinstance(v, str) for v in presets.values()):
        raise FilterError(f"presets file {path} must map names to filter expressions")
    return presets


def save_preset(name: str, expression: str) -> Path:
    """Save a named filter (checked, with the presets it uses) to the presets file; returns the file."""
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise FilterError(f"preset names use letters, digits, '_', '-', '.': got {name!r}")
    saved = load_presets()
    parse_filter(expression, {k: v for k, v in saved.items() if k != name})
    presets = saved | {name: expression}
    path = presets_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(presets, indent=2, sort_keys=True))
    return path


# --- what a run records ---


def describe_selection(expression: str, limit: int | None, seed: int) -> str:
    """How a run's prompts are chosen, as recorded in its manifest. The expression is checked first
    (``parse_filter``), so a front door that describes its run before loading anything refuses a bad filter
    before any work."""
    parse_filter(expression)
    return expression if limit is None else f"{expression} | sample {limit} by hash (seed {seed})"


def describe_candidates(selection: str, n_candidates: int, seed: int) -> str:
    """A selection made among a seeded sample of candidate prompts, as recorded in the manifest."""
    return f"{selection} among {n_candidates} candidates (seed {seed})"
