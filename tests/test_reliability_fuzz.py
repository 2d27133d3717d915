"""Fuzzing: span finding never raises on any text, dataset files load or fail with DatasetError, and the CLI's
argument handling never ends in a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from infoflow.cli import app
from infoflow.data import FactPrompt, PromptError, TokenSpans, find_spans_many, load_dataset
from infoflow.data.errors import DatasetError
from infoflow.models import load_model

TOKENIZER = load_model("builtin-gpt2").tokenizer
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(prefix=TEXT, subject=TEXT, suffix=TEXT, target=TEXT)
def test_spans_are_valid_or_a_prompt_error(prefix: str, subject: str, suffix: str, target: str) -> None:
    prompt = FactPrompt(prompt_id=0, prompt=prefix + subject + suffix, subject=subject, target=target)
    (result,) = find_spans_many(TOKENIZER, [prompt])
    if isinstance(result, PromptError):
        assert result.reason
        return
    assert isinstance(result, TokenSpans)
    assert 0 <= result.subject.start < result.subject.stop <= result.num_tokens
    assert 0 <= result.target_id < len(TOKENIZER)


CELL = st.one_of(TEXT, st.integers(), st.none(), st.floats(allow_nan=True), st.booleans())
ROW = st.dictionaries(st.sampled_from(["prompt", "subject", "target", "relation", "split", "x"]), CELL, max_size=6)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, max_size=5), suffix=st.sampled_from([".json", ".jsonl", ".csv"]), raw=st.binary(max_size=64))
def test_dataset_files_load_or_raise_dataset_error(rows: list[dict], suffix: str, raw: bytes, tmp_path: Path) -> None:
    for i, content in enumerate([rows, raw]):
        path = tmp_path / f"data{i}{suffix}"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif suffix == ".json":
            path.write_text(json.dumps(content))
        elif suffix == ".jsonl":
            path.write_text("".join(json.dumps(row) + "\n" for row in content))
        else:
            names = sorted({key for row in content for key in row})
            path.write_text(
                "\n".join([",".join(names)] + [",".join(str(r.get(n, "")) for n in names) for r in content])
            )
        try:
            prompts = load_dataset(path)
        except DatasetError as error:
            assert str(path) in str(error)
            continue
        assert all(isinstance(p.prompt, str) and isinstance(p.target, str) for p in prompts)


OPTION = st.sampled_from(
    ["--limit", "--window-size", "--batch-size", "--target", "--source", "--features", "--mode", "--exempt-fraction",
     "--seed", "--engine", "--dtype", "--device", "--model", "--filter", "--dataset"]
)  # fmt: skip
VALUE = st.one_of(st.integers(-3, 20).map(str), st.sampled_from(["last", "subject", "all", "x", "", "nan", "1.5"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(OPTION, VALUE), max_size=3))
def test_cli_arguments_never_end_in_a_traceback(pairs: list[tuple[str, str]], tmp_path: Path) -> None:
    args = ["info-flow", "--model", "builtin-gpt2", "--filter", "ids(0, 1)", "--store", str(tmp_path / "s.duckdb")]
    args += [item for pair in pairs for item in pair] + ["--quiet"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        assert "error:" in result.output
