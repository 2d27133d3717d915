"""Bad input: every kind is refused with a clear message, before work starts for a bad run argument, and at the
cost of one prompt (recorded with its reason in the store) for a bad prompt."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from tokenizers import processors
from typer.testing import CliRunner

from infoflow.cli import app
from infoflow.data import FactPrompt, TokenType, load_dataset
from infoflow.engines.fast import FastEngine
from infoflow.experiments.evaluate import evaluate
from infoflow.experiments.info_flow import InfoFlowParams, info_flow
from infoflow.experiments.runner import RunContext
from infoflow.models import ModelLoadError, load_model
from infoflow.models.load import LoadedModel
from infoflow.store import ResultsStore

MODEL = "builtin-gpt2"  # 8 layers, 128 positions, a BOS token
GOOD = load_dataset("synthetic")[:3]


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_model(MODEL)


def cli(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Exit code and output (stdout and stderr) of ``infoflow ARGS`` run in this process."""
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400", **(env or {})})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def assert_refused(args: list[str | Path], *fragments: str, code: int = 1) -> str:
    exit_code, output = cli(*args)
    assert exit_code == code, output
    for fragment in fragments:
        assert fragment in output, output
    return output


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def good_rows() -> list[dict[str, str]]:
    return [{"prompt": p.prompt, "subject": p.subject, "target": p.target} for p in GOOD]


# --- models ---


def test_unknown_model_id_or_path(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    assert_refused(
        ["info-flow", "--model", "mamba-130mm", "--store", store], "unknown model 'mamba-130mm'", "mamba1-130m"
    )
    assert_refused(["evaluate", "--model", str(tmp_path / "missing"), "--store", store], "no such file or folder")
    assert not store.exists()  # nothing was started


def test_unsupported_architecture(tmp_path: Path) -> None:
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert_refused(["evaluate", "--model", folder, "--store", tmp_path / "s.duckdb"], "unsupported architecture 'bert'")


def test_offline_hub_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    output = assert_refused(
        ["evaluate", "--model", "some-org/some-model", "--store", tmp_path / "s.duckdb"],
        "cannot download 'some-org/some-model'",
        "HF_HUB_OFFLINE is set",
        "hf download",
    )
    assert output.count("error:") == 1
    with pytest.raises(ModelLoadError, match="cannot reach the Hugging Face hub"):
        load_model("some-org/some-model")


# --- datasets ---


def test_dataset_missing_or_wrong_columns(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    assert_refused(["evaluate", "-m", MODEL, "-d", tmp_path / "nope.csv", "--store", store], "no dataset file")
    wrong = write_csv(tmp_path / "wrong.csv", [{"question": "Where?", "answer": " Paris"}])
    assert_refused(["evaluate", "-m", MODEL, "-d", wrong, "--store", store], "missing column(s) 'prompt'")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a", "subject": "a", "target": " b"}\n{"prompt": \n')
    assert_refused(["evaluate", "-m", MODEL, "-d", broken, "--store", store], "broken.jsonl: cannot read it")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"prompt,subject,target\n\xff\xfe\x00bad\n")
    assert_refused(["evaluate", "-m", MODEL, "-d", binary, "--store", store], "binary.csv: cannot read it")
    assert not store.exists()


# --- bad prompts cost one prompt each ---


def test_bad_prompts_are_recorded_and_skipped(tmp_path: Path) -> None:
    bad = [
        {"prompt": "", "subject": "Thargol", "target": " Tornhal"},
        {"prompt": "Thargol was born in", "subject": "Silwen", "target": " Tornhal"},
        {"prompt": "Thargol was born in", "subject": "Thargol", "target": ""},
        {"prompt": "Thargol " * 150 + "was born in", "subject": "Thargol", "target": " Tornhal"},
    ]
    dataset = write_csv(tmp_path / "facts.csv", good_rows() + bad)
    store = tmp_path / "s.duckdb"
    code, output = cli("info-flow", "-m", MODEL, "-d", dataset, "--filter", "all", "--store", store, "-q")
    assert code == 0, output
    with ResultsStore.open(store, read_only=True) as results:
        (run,) = results.runs().itertuples()
        assert run.status == "complete" and run.n_done == 3 and run.n_errors == 4
        rows = results.frame(run.run_id)
        errors = dict(results.frame(run.run_id, "errors")[["prompt_id", "reason"]].itertuples(index=False))
    assert set(rows["prompt_id"]) == {0, 1, 2}
    assert errors[3] == "empty prompt"
    assert errors[4] == "subject 'Silwen' not in prompt 'Thargol was born in'"
    assert errors[5] == "target '' tokenizes to nothing"
    assert errors[6].startswith("prompt has ") and errors[6].endswith("tokens but the model supports at most 128")


def test_empty_token_type_costs_the_prompt(loaded: LoadedModel, tmp_path: Path) -> None:
    tokenizer = copy.deepcopy(loaded.tokenizer)
    tokenizer.backend_tokenizer.post_processor = processors.Sequence([])  # no BOS: context can be empty
    no_bos = dataclasses.replace(loaded, tokenizer=tokenizer)
    with_context = [p for p in load_dataset("synthetic")[:50] if not p.extras["subject_first"]][:2]
    subject_first = FactPrompt(prompt_id=99_999, prompt="Thargol was born in", subject="Thargol", target=" Tornhal")
    params = InfoFlowParams(sources=(TokenType.CONTEXT,), window_sizes=(4,))
    with ResultsStore.open(tmp_path / "s.duckdb") as store:
        context = RunContext(no_bos, FastEngine(no_bos.model), store, "facts", show_progress=False)
        run_id = info_flow(context, [*with_context, subject_first], params)
        errors = store.frame(run_id, "errors")
        assert errors[["prompt_id", "reason"]].values.tolist() == [[99_999, "no context tokens in this prompt"]]
        assert set(store.frame(run_id)["prompt_id"]) == {p.prompt_id for p in with_context}
        assert store.run(run_id).status == "complete"


def test_out_of_memory_costs_the_prompt(loaded: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk that runs out of memory runs again prompt by prompt; the prompt that does not fit alone is skipped."""
    long_prompt = dataclasses.replace(GOOD[0], prompt_id=7, prompt="Indeed, " * 6 + GOOD[0].prompt)
    engine = FastEngine(loaded.model)
    real = engine.scores_many

    def scores_many(requests: list) -> list:
        if any(len(ids) > 40 for ids, _, _ in requests):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(requests)

    monkeypatch.setattr(engine, "scores_many", scores_many)
    with ResultsStore.open(tmp_path / "s.duckdb") as store:
        context = RunContext(loaded, engine, store, "facts", show_progress=False)
        run_id = info_flow(context, [*GOOD, long_prompt], InfoFlowParams(window_sizes=(4,)))
        errors = store.frame(run_id, "errors")
        assert errors["prompt_id"].tolist() == [7]
        assert errors["reason"][0].startswith("out of memory on this prompt")
        assert set(store.frame(run_id)["prompt_id"]) == {p.prompt_id for p in GOOD}


@pytest.mark.parametrize("experiment", ["evaluate", "info_flow"])
def test_non_finite_output_names_prompt_and_layer(experiment: str, tmp_path: Path) -> None:
    poisoned = load_model(MODEL)
    with torch.no_grad():
        next(poisoned.model.blocks[3].parameters()).fill_(float("nan"))  # layer 3's input norm
    with ResultsStore.open(tmp_path / "s.duckdb") as store:
        context = RunContext(poisoned, FastEngine(poisoned.model), store, "facts", show_progress=False)
        if experiment == "evaluate":
            run_id = evaluate(context, GOOD[:2])
        else:
            run_id = info_flow(context, GOOD[:2], InfoFlowParams(window_sizes=(4,)))
        errors = store.frame(run_id, "errors")
        assert store.run(run_id).status == "complete"
    assert errors["prompt_id"].tolist() == [GOOD[0].prompt_id, GOOD[1].prompt_id]
    for prompt, reason in zip(GOOD[:2], errors["reason"], strict=True):
        assert reason.startswith(f"non-finite output (NaN/inf) on prompt {prompt.prompt_id} {prompt.prompt!r}")
        assert "first at layer 3" in reason


# --- bad run arguments fail before work starts ---


def test_window_larger_than_depth_fails_before_work(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    # the default filter 'correct' would evaluate the whole dataset first: the check comes before it
    assert_refused(
        ["info-flow", "-m", MODEL, "-w", "9", "--store", store], "window size 9 is larger than the model's 8"
    )
    assert_refused(
        ["heatmap", "-m", MODEL, "-w", "12", "--store", store], "window size 12 is larger than the model's 8"
    )
    assert_refused(["attention", "-m", MODEL, "--layer", "8", "--filter", "correct", "--store", store], "layers [8]")
    assert_refused(["info-flow", "-m", MODEL, "--strict", "--store", store], "supported by no layer")
    assert_refused(["info-flow", "-m", MODEL, "--exempt-fraction", "1.5", "--store", store], "exempt fraction")
    with ResultsStore.open(store, read_only=True) as results:
        assert results.runs().empty


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--limit", "0"], "--limit"),
        (["--limit", "many"], "--limit"),
        (["--target", "nowhere"], "--target"),
        (["--mode", "erase"], "--mode"),
    ],
)
def test_bad_option_values_are_usage_errors(args: list[str], fragment: str, tmp_path: Path) -> None:
    assert_refused(["info-flow", "-m", MODEL, *args, "--store", tmp_path / "s.duckdb"], fragment, code=2)
    assert not (tmp_path / "s.duckdb").exists()
