"""The parts of a prompt a position belongs to, as causal tracing averages them over prompts of different lengths
(Meng et al. 2022): before the subject, its first, middle and last tokens, the first token after it, further
tokens, and the last token (torch-free, for the figures)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infoflow.data.spans import TokenSpans

ROLES = ("before", "subject_first", "subject_middle", "subject_last", "first_after", "further", "last")
SUBJECT_ROLES = ("subject_first", "subject_middle", "subject_last")


def role(spans: TokenSpans, position: int) -> str:
    """The part of the prompt ``position`` is in (one of ``ROLES``; the last position is ``last`` even where it
    is the subject's)."""
    subject, last = spans.subject, spans.num_tokens - 1
    if position == last:
        return "last"
    if position == subject[-1]:
        return "subject_last"
    if position == subject[0]:
        return "subject_first"
    if position in subject:
        return "subject_middle"
    if position < subject[0]:
        return "before"
    return "first_after" if position == subject[-1] + 1 else "further"
