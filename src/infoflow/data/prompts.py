"""Fact prompts: a prompt, its subject and the true continuation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FactPrompt:
    """One fact to recall: ``prompt`` contains ``subject``; ``target`` continues ``prompt`` (e.g. ``" Paris"``)."""

    prompt_id: int  # stable id: the row index in the source dataset
    prompt: str
    subject: str
    target: str  # the true continuation, leading space kept
    relation: str | None = None
    extras: dict[str, Any] = field(default_factory=dict, hash=False)  # the source row's other columns


def as_continuation(prompt: str, text: str) -> str:
    """``text`` as it continues ``prompt``: a space is prepended unless either side already has whitespace there.

    Datasets such as known_1000 store the answer as a bare word ("Antarctica"); the model sees it after the
    prompt as " Antarctica", which is the token to score.
    """
    if not text or text[0].isspace() or not prompt or prompt[-1].isspace():
        return text
    return " " + text
