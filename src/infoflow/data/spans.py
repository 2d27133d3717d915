"""Token positions of a fact prompt, from the tokenizer's offset mapping (fast tokenizers only).

Positions index the tokens of ``prompt`` as the model sees them, special tokens (BOS) included.
The subject is every token whose characters overlap the subject's first occurrence in the prompt
(a leading space belongs to the subject); special tokens are never in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

from infoflow.data.prompts import FactPrompt


class PromptError(Exception):
    """A prompt that an experiment cannot use; ``reason`` says why. Experiments record it and skip the prompt."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenType(StrEnum):
    SUBJECT = "subject"  # tokens overlapping the subject
    RELATION = "relation"  # every non-subject token, BOS and the last token included
    RELATION_MINUS_LAST = "relation_minus_last"  # relation without the last token
    CONTEXT = "context"  # tokens before the subject (BOS included)
    FIRST = "first"  # position 0
    LAST = "last"  # the last position, where the next token is predicted
    ALL = "all"  # every position


@dataclass(frozen=True)
class TokenSpans:
    """A tokenized prompt: its ids, the subject's token range and the scored target token."""

    input_ids: tuple[int, ...]
    subject: range  # contiguous, non-empty, no special token
    target_id: int  # first token of the target, tokenized without special tokens

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    def positions(self, token_type: TokenType | str) -> tuple[int, ...]:
        """Positions of ``token_type``; an empty type raises ``PromptError``."""
        token_type = TokenType(token_type)
        last = self.num_tokens - 1
        relation = [i for i in range(self.num_tokens) if i not in self.subject]
        positions = {
            TokenType.SUBJECT: self.subject,
            TokenType.RELATION: relation,
            TokenType.RELATION_MINUS_LAST: [i for i in relation if i != last],
            TokenType.CONTEXT: range(self.subject.start),
            TokenType.FIRST: [0],
            TokenType.LAST: [last],
            TokenType.ALL: range(self.num_tokens),
        }[token_type]
        if not positions:
            raise PromptError(f"no {token_type} tokens in this prompt")
        return tuple(positions)


def find_spans(tokenizer: PreTrainedTokenizerBase, prompt: FactPrompt) -> TokenSpans:
    """Token spans of one prompt; raises ``PromptError`` if the prompt cannot be used."""
    result = find_spans_many(tokenizer, [prompt])[0]
    if isinstance(result, PromptError):
        raise result
    return result


def find_spans_many(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[FactPrompt]
) -> list[TokenSpans | PromptError]:
    """Token spans of many prompts in two batched tokenizer calls; an unusable prompt gets its ``PromptError``."""
    if not tokenizer.is_fast:
        raise TypeError("token spans need a fast tokenizer (offset mapping); got a slow one")
    if not prompts:
        return []
    encoded = tokenizer(
        [p.prompt for p in prompts], return_offsets_mapping=True, return_special_tokens_mask=True, truncation=False
    )
    targets = tokenizer([p.target for p in prompts], add_special_tokens=False)["input_ids"]
    return [
        _spans(prompt, ids, offsets, special, target)
        for prompt, ids, offsets, special, target in zip(
            prompts,
            encoded["input_ids"],
            encoded["offset_mapping"],
            encoded["special_tokens_mask"],
            targets,
            strict=True,
        )
    ]


def _spans(
    prompt: FactPrompt,
    ids: list[int],
    offsets: list[tuple[int, int]],
    special: list[int],
    target_ids: list[int],
) -> TokenSpans | PromptError:
    if not prompt.prompt:
        return PromptError("empty prompt")
    if not prompt.subject:
        return PromptError("empty subject")
    start = prompt.prompt.find(prompt.subject)
    if start < 0:
        return PromptError(f"subject {prompt.subject!r} not in prompt {prompt.prompt!r}")
    if not target_ids:
        return PromptError(f"target {prompt.target!r} tokenizes to nothing")
    stop = start + len(prompt.subject)
    # a token overlaps [start, stop) if its characters meet it; an empty-offset token strictly inside counts too
    hits = [i for i, (a, b) in enumerate(offsets) if not special[i] and a < stop and b > start]
    if not hits:
        return PromptError(f"subject {prompt.subject!r} covers no token of the prompt")
    subject = range(hits[0], hits[-1] + 1)
    if any(special[i] for i in subject):
        return PromptError(f"subject {prompt.subject!r} contains a special token")
    return TokenSpans(input_ids=tuple(ids), subject=subject, target_id=target_ids[0])
