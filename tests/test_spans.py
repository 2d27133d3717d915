"""Token spans from offset mappings: examples, errors, and properties over three kinds of tokenizers."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infoflow.data import FactPrompt, PromptError, TokenSpans, TokenType, find_spans, find_spans_many

pytest_plugins = ("tests.tokenizers_fixtures",)


def fact(prompt: str, subject: str, target: str = " Paris") -> FactPrompt:
    return FactPrompt(prompt_id=0, prompt=prompt, subject=subject, target=target)


def test_counterfact_example_smollm2(smollm2_tokenizer):
    spans = find_spans(
        smollm2_tokenizer, fact("The mother tongue of Danielle Darrieux is", " Danielle Darrieux", " French")
    )
    # The | mother | tongue | of | Daniel | le | Dar | rie | ux | is   (no BOS)
    assert spans.subject == range(4, 9)
    assert spans.positions(TokenType.SUBJECT) == (4, 5, 6, 7, 8)
    assert spans.positions(TokenType.RELATION) == (0, 1, 2, 3, 9)
    assert spans.positions(TokenType.RELATION_MINUS_LAST) == (0, 1, 2, 3)
    assert spans.positions(TokenType.CONTEXT) == (0, 1, 2, 3)
    assert spans.positions(TokenType.FIRST) == (0,)
    assert spans.positions(TokenType.LAST) == (9,)
    assert spans.positions("all") == tuple(range(10))
    assert spans.target_id == smollm2_tokenizer(" French", add_special_tokens=False)["input_ids"][0]


def test_subject_at_start_has_no_context(smollm2_tokenizer):
    spans = find_spans(smollm2_tokenizer, fact("Toko Yasuda, the", "Toko Yasuda", " guitar"))
    assert spans.subject.start == 0
    assert spans.positions(TokenType.FIRST) == (0,)
    with pytest.raises(PromptError, match="no context tokens"):
        spans.positions(TokenType.CONTEXT)


def test_bos_is_context_and_relation_never_subject(tokenizer_factory):
    spans = find_spans(tokenizer_factory("word_level"), fact("Paris is the capital of", "Paris", " France"))
    assert spans.input_ids[0] == 1  # [BOS]
    assert spans.subject == range(1, 2)
    assert spans.positions(TokenType.CONTEXT) == (0,)
    assert spans.positions(TokenType.RELATION) == (0, 2, 3, 4, 5)


def test_leading_space_belongs_to_subject_with_trimmed_offsets(tokenizer_factory):
    tokenizer = tokenizer_factory("byte_bpe")
    prompt = fact("The mother tongue of Danielle Darrieux is", " Danielle Darrieux", " French")
    spans = find_spans(tokenizer, prompt)
    tokens = tokenizer.convert_ids_to_tokens(list(spans.input_ids))
    assert tokens[spans.subject.start].startswith("Ġ")
    assert "".join(tokens[i] for i in spans.subject).replace("Ġ", " ") == " Danielle Darrieux"


def test_first_occurrence_and_subject_at_the_end(smollm2_tokenizer):
    spans = find_spans(smollm2_tokenizer, fact("Paris or Paris", "Paris"))
    assert spans.subject.start == 0
    spans = find_spans(smollm2_tokenizer, fact("I love Paris", " Paris"))
    last = spans.num_tokens - 1
    assert last in spans.subject
    assert last not in spans.positions(TokenType.RELATION)
    assert spans.positions(TokenType.RELATION) == spans.positions(TokenType.RELATION_MINUS_LAST)


@pytest.mark.parametrize(
    ("prompt", "reason"),
    [
        (fact("Paris is", "London"), "not in prompt"),
        (fact("", "Paris"), "empty prompt"),
        (fact("Paris is", ""), "empty subject"),
        (fact("Paris is", "Paris", target=""), "tokenizes to nothing"),
    ],
)
def test_prompt_errors(smollm2_tokenizer, prompt, reason):
    with pytest.raises(PromptError, match=reason) as info:
        find_spans(smollm2_tokenizer, prompt)
    assert reason in info.value.reason


def test_whitespace_subject_covers_no_word_token(tokenizer_factory):
    with pytest.raises(PromptError, match="covers no token"):
        find_spans(tokenizer_factory("word_level"), fact("Paris  is", " "))


def test_many_keeps_order_and_returns_errors(smollm2_tokenizer):
    prompts = [fact("Paris is", "Paris"), fact("Paris is", "Rome"), fact("Rome is", "Rome")]
    results = find_spans_many(smollm2_tokenizer, prompts)
    assert [type(r) for r in results] == [TokenSpans, PromptError, TokenSpans]
    assert results[0] == find_spans(smollm2_tokenizer, prompts[0])
    assert find_spans_many(smollm2_tokenizer, []) == []


def test_slow_tokenizer_is_refused():
    with pytest.raises(TypeError, match="fast tokenizer"):
        find_spans_many(SimpleNamespace(is_fast=False), [fact("Paris is", "Paris")])


def test_prompt_error_pickles_and_token_type_parses():
    error = pickle.loads(pickle.dumps(PromptError("subject not in prompt")))
    assert error.reason == "subject not in prompt"
    assert TokenType("relation_minus_last") is TokenType.RELATION_MINUS_LAST
    with pytest.raises(ValueError):
        TokenType("object")


ALPHABET = st.sampled_from(list("abcXYZ  ,.'-019éß日本🎉\t"))


@st.composite
def prompts(draw) -> FactPrompt:
    text = draw(st.text(ALPHABET, min_size=1, max_size=40))
    start = draw(st.integers(0, len(text) - 1))
    stop = draw(st.integers(start + 1, len(text)))
    target = draw(st.sampled_from([" Paris", "x", " 1990", "日本"]))
    return fact(text, text[start:stop], target)


def check_spans(tokenizer, prompt: FactPrompt, spans: TokenSpans) -> None:
    encoded = tokenizer(prompt.prompt, return_offsets_mapping=True, return_special_tokens_mask=True)
    offsets, special = encoded["offset_mapping"], encoded["special_tokens_mask"]
    n, last = spans.num_tokens, spans.num_tokens - 1
    assert spans.input_ids == tuple(encoded["input_ids"])
    start = prompt.prompt.index(prompt.subject)
    stop = start + len(prompt.subject)

    def overlaps(i: int) -> bool:
        a, b = offsets[i]
        return not special[i] and a < stop and b > start

    subject = spans.positions(TokenType.SUBJECT)
    # contiguous, non-empty, never a special token
    assert subject == tuple(range(subject[0], subject[-1] + 1))
    assert not any(special[i] for i in subject)
    # every overlapping token is in the span; every span token overlaps or has no characters
    assert all(i in subject for i in range(n) if overlaps(i))
    assert all(overlaps(i) or offsets[i][0] == offsets[i][1] for i in subject)
    # the subject's visible characters are covered by subject tokens
    covered = {c for i in subject for c in range(*offsets[i])}
    assert all(c in covered for c in range(start, stop) if not prompt.prompt[c].isspace())
    # the last token is in the subject only if the subject reaches into it
    assert last not in subject or overlaps(last)
    # the other types
    relation = spans.positions(TokenType.RELATION) if len(subject) < n else ()
    assert sorted(relation + subject) == list(range(n))
    assert not set(relation) & set(subject)
    if last in relation and len(relation) > 1:
        assert spans.positions(TokenType.RELATION_MINUS_LAST) == relation[:-1]
    if subject[0] > 0:
        assert spans.positions(TokenType.CONTEXT) == tuple(range(subject[0]))
    assert spans.positions(TokenType.FIRST) == (0,)
    assert spans.positions(TokenType.LAST) == (last,)
    assert spans.positions(TokenType.ALL) == tuple(range(n))
    assert spans.target_id == tokenizer(prompt.target, add_special_tokens=False)["input_ids"][0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=prompts())
def test_span_properties(any_tokenizer, prompt):
    try:
        spans = find_spans(any_tokenizer, prompt)
    except PromptError as error:
        # only a subject with no visible character can miss every token (word-level drops whitespace)
        assert "covers no token" in error.reason
        assert prompt.subject.isspace()
        return
    check_spans(any_tokenizer, prompt, spans)


@settings(max_examples=40, deadline=None)
@given(batch=st.lists(prompts(), max_size=8))
def test_batched_equals_single(any_tokenizer, batch):
    def single(prompt: FactPrompt) -> TokenSpans | PromptError:
        try:
            return find_spans(any_tokenizer, prompt)
        except PromptError as error:
            return error

    expected = [single(p) for p in batch]
    results = find_spans_many(any_tokenizer, batch)
    assert [type(r) for r in results] == [type(e) for e in expected]
    assert [r for r in results if isinstance(r, TokenSpans)] == [e for e in expected if isinstance(e, TokenSpans)]
