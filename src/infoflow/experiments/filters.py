"""Prompt filters: small expressions over evaluate results, combined with and / or / not, saved as presets.

    all                      every prompt of the dataset
    correct                  the model under study ranks the target first   (correct(MODEL): another model)
    top(K)                   the target is within the top K                 (top(K, MODEL))
    all-correct(M1, M2, ...) every listed model is correct
    ids(3, 17, 42)           explicit prompt ids
    preset(NAME)             a saved filter
    e.g.  "correct and not ids(13190)",  "top(5) or correct(gpt2-xl)"

Filters needing evaluate results read them from the results store (run ``infoflow evaluate`` first; the
model under study is evaluated automatically). ``sample(ids, n, seed)`` then draws a reproducible subset.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

RankLookup = Callable[[str], dict[int, int]]  # model id -> {prompt_id: rank of the target}
TOKEN = re.compile(r"\s*(?:(?P<word>[A-Za-z0-9_.\-/:]+)|(?P<punct>[(),]))")


class FilterError(ValueError):
    """A filter expression that cannot be parsed or evaluated; the message says why."""


@dataclass(frozen=True)
class FilterContext:
    universe: frozenset[int]  # every prompt id of the dataset
    model: str  # the model under study, for bare ``correct`` / ``top(K)``
    ranks: RankLookup


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


class Parser:
    """Recursive descent: or_expr := and_expr ('or' and_expr)*; and_expr := unary ('and' unary)*;
    unary := 'not' unary | '(' or_expr ')' | atom."""

    def __init__(self, expression: str, context: FilterContext, presets: dict[str, str]) -> None:
        self.expression, self.context, self.presets = expression, context, presets
        self.tokens, self.position = tokenize(expression), 0

    def parse(self) -> frozenset[int]:
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

    def or_expr(self) -> frozenset[int]:
        result = self.and_expr()
        while (self.peek() or "").lower() == "or":
            self.take()
            result = result | self.and_expr()
        return result

    def and_expr(self) -> frozenset[int]:
        result = self.unary()
        while (self.peek() or "").lower() == "and":
            self.take()
            result = result & self.unary()
        return result

    def unary(self) -> frozenset[int]:
        token = (self.peek() or "").lower()
        if token == "not":
            self.take()
            return self.context.universe - self.unary()
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

    def atom(self) -> frozenset[int]:
        name = self.take().lower()
        args = self.arguments()
        atoms: dict[str, Callable[[list[str]], frozenset[int]]] = {
            "all": lambda a: self.context.universe,
            "correct": lambda a: self.within_rank(1, a[0] if a else self.context.model),
            "top": lambda a: self.within_rank(self.integer(a[0]), a[1] if len(a) > 1 else self.context.model),
            "all-correct": lambda a: frozenset.intersection(*(self.within_rank(1, m) for m in a)),
            "ids": lambda a: frozenset(self.integer(i) for i in a) & self.context.universe,
            "preset": lambda a: self.preset(a[0]),
        }
        if name not in atoms:
            raise FilterError(f"unknown filter {name!r}; known: {', '.join(atoms)}")
        needs_args = {"top": 1, "all-correct": 1, "ids": 1, "preset": 1}
        if len(args) < needs_args.get(name, 0):
            raise FilterError(f"filter {name!r} needs arguments, e.g. {name}(...)")
        return atoms[name](args)

    def within_rank(self, k: int, model: str) -> frozenset[int]:
        ranks = self.context.ranks(model)
        return frozenset(prompt for prompt, rank in ranks.items() if rank <= k) & self.context.universe

    def integer(self, text: str) -> int:
        if not text.isdigit():
            raise FilterError(f"expected a number in filter {self.expression!r}, found {text!r}")
        return int(text)

    def preset(self, name: str) -> frozenset[int]:
        if name not in self.presets:
            raise FilterError(f"no preset named {name!r}; saved presets: {', '.join(sorted(self.presets)) or 'none'}")
        return Parser(self.presets[name], self.context, {k: v for k, v in self.presets.items() if k != name}).parse()


def select(expression: str, context: FilterContext, presets: dict[str, str] | None = None) -> frozenset[int]:
    """The prompt ids an expression selects."""
    return Parser(expression, context, presets if presets is not None else load_presets()).parse()


def sample(ids: Iterable[int], n: int | None, seed: int) -> list[int]:
    """``n`` ids drawn without replacement with ``seed`` (sorted ids first, so the draw never depends on set
    order); all ids, sorted, when ``n`` is None or not smaller."""
    ordered = sorted(ids)
    if n is None or n >= len(ordered):
        return ordered
    return sorted(random.Random(seed).sample(ordered, n))


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
    """Save a named filter (checked for syntax, and that the presets it uses exist) to the presets file;
    returns the file."""
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise FilterError(f"preset names use letters, digits, '_', '-', '.': got {name!r}")
    saved = load_presets()
    syntax_only = FilterContext(universe=frozenset(), model="", ranks=lambda model: {})
    Parser(expression, syntax_only, {k: v for k, v in saved.items() if k != name}).parse()
    presets = saved | {name: expression}
    path = presets_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(presets, indent=2, sort_keys=True))
    return path


def describe_selection(expression: str, limit: int | None, seed: int) -> str:
    """How a run's prompts were chosen, as recorded in its manifest."""
    return expression if limit is None else f"{expression} | sample {limit} (seed {seed})"


def describe_candidates(selection: str, n_candidates: int, seed: int) -> str:
    """A selection made among a seeded sample of candidate prompts, as recorded in the manifest."""
    return f"{selection} among {n_candidates} candidates (seed {seed})"
