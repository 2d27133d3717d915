"""Every CounterFact and known_1000 prompt gets token spans with SmolLM2's tokenizer, as the reference would."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from infoflow.data import FactPrompt, PromptError, TokenSpans, TokenType, find_spans_many, load_dataset

pytest_plugins = ("tests.tokenizers_fixtures",)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASET_FILES = {"counterfact": SHARED_DATA / "counterfact.parquet", "known_1000": SHARED_DATA / "known_1000.json"}
EXPECTED_SIZES = {"counterfact": 21_919, "known_1000": 1_209}


@pytest.fixture(scope="module", params=sorted(DATASET_FILES))
def dataset(request) -> tuple[str, list[FactPrompt]]:
    path = DATASET_FILES[request.param]
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return request.param, load_dataset(request.param, path=path)


def test_every_prompt_gets_spans_or_an_explained_error(smollm2_tokenizer, dataset):
    name, prompts = dataset
    results = find_spans_many(smollm2_tokenizer, prompts)
    assert len(prompts) == len(results) == EXPECTED_SIZES[name]
    errors = Counter(r.reason for r in results if isinstance(r, PromptError))
    spans = [r for r in results if isinstance(r, TokenSpans)]
    empty = Counter()
    for s in spans:
        for token_type in TokenType:
            try:
                s.positions(token_type)
            except PromptError:
                empty[token_type.value] += 1
    print(f"\n{name}: {len(spans)}/{len(prompts)} prompts with spans, errors {dict(errors)}, empty types {dict(empty)}")
    assert all(r.reason for r in results if isinstance(r, PromptError))
    # the subject is in every prompt and never ends it (reference-spec §2.1), so nothing fails here
    assert len(spans) == len(prompts)
    assert all(s.num_tokens - 1 not in s.subject for s in spans)
    # SmolLM2 adds no BOS: no context when the prompt starts with the subject, and no relation_minus_last
    # when it is the subject and one more token ("Emilio Lussu speaks")
    assert set(empty) <= {"context", "relation_minus_last"}
    assert empty["context"] == sum(p.prompt.startswith(p.subject) for p in prompts)
    assert empty["relation_minus_last"] == sum(s.subject == range(s.num_tokens - 1) for s in spans)


def reference_subject_range(tokenizer, ids: list[int], subject: str) -> range:
    """The reference's ``find_token_range`` (decode-based), reference-spec §3.2."""
    char_loc = tokenizer.decode(ids).index(subject)
    tok_start = tok_end = None
    for i in range(len(ids)):
        loc = len(tokenizer.decode(ids[:i]))
        if tok_start is None and loc > char_loc:
            tok_start = i - 1
        if tok_end is None and loc >= char_loc + len(subject):
            tok_end = i
            break
    assert tok_start is not None and tok_end is not None
    return range(tok_start, tok_end)


def test_subject_spans_match_the_reference(smollm2_tokenizer, dataset):
    _, prompts = dataset
    sample = prompts[:: max(1, len(prompts) // 1000)]
    for prompt, spans in zip(sample, find_spans_many(smollm2_tokenizer, sample), strict=True):
        assert spans.subject == reference_subject_range(smollm2_tokenizer, list(spans.input_ids), prompt.subject)
