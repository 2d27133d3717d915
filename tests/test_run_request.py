"""The run request every front door builds: its checks, what ``open_run`` loads from it, and the command line's
shared options, threads, device and dtype choices."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import typer.main

from infoflow import cli
from infoflow.engines.base import make_engine
from infoflow.engines.fast import FastEngine
from infoflow.engines.reference import ReferenceEngine
from infoflow.experiments.request import EngineName, Precision, RunRequest, open_run, resolve_device
from infoflow.experiments.threads import default_threads, resolve_threads
from infoflow.store import ResultsStore
from tests.cli_support import MODEL, invoke, wide_consoles, write_facts_csv


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_facts_csv(tmp_path_factory.mktemp("data"))


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The default store in tmp; torch's threads back to one afterwards (tests here change them)."""
    monkeypatch.setenv("INFOFLOW_STORE", str(tmp_path / "default.duckdb"))
    yield
    torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": "gtp2"}, "unknown model 'gtp2'"),
        ({"model": "~/no/such.gguf"}, "no such file or folder"),
        ({"filter": "correct andd top(3)"}, "unexpected 'andd' in filter"),
        ({"filter": "ids(1"}, "expected ')'"),
        ({"device": "gpu"}, "unsupported device 'gpu'; use auto, cpu, cuda or cuda:N"),
        ({"dtype": "float64"}, "unknown dtype 'float64'; choose float32, bfloat16, float16"),
        ({"engine": "slow"}, "unknown engine 'slow'; choose fast, reference"),
        ({"limit": 0}, "limit must be at least 1, got 0"),
        ({"batch_size": 0}, "batch size must be at least 1"),
        ({"threads": 0}, "threads must be at least 1"),
    ],
)
def test_a_bad_request_fails_when_built(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunRequest(**fields)


def test_request_choices_accept_their_names() -> None:
    request = RunRequest(model="state-spaces/mamba-130m-hf", device="cuda:1", dtype="bfloat16", engine="reference")
    assert (request.dtype, request.engine) == (Precision.BFLOAT16, EngineName.REFERENCE)
    assert RunRequest(filter="correct", limit=4, seed=2).selection() == "correct | sample 4 by hash (seed 2)"
    selection = RunRequest(limit=4, candidates=50).selection(50)
    assert selection == "all | sample 4 by hash (seed 0) among 50 candidates (seed 0)"


def test_auto_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


def test_open_run_loads_what_the_request_names(dataset: Path, tmp_path: Path) -> None:
    request = RunRequest(model=MODEL, dataset=str(dataset), filter="ids(1, 3, 4)", limit=2, seed=1, candidates=5,
                         store=tmp_path / "r.duckdb", dtype="bfloat16", engine="reference", threads=2,
                         show_progress=False)  # fmt: skip
    with open_run(request) as run:
        assert torch.get_num_threads() == 2
        assert run.loaded.model.lm_head.weight.dtype == torch.bfloat16
        assert isinstance(run.context.engine, ReferenceEngine) and run.context.engine.device.type == "cpu"
        assert len(run.prompts) == 5  # the candidate sample of the 6 prompts
        assert run.context.dataset_filter == "ids(1, 3, 4) | sample 2 by hash (seed 1) among 5 candidates (seed 1)"
        context, chosen = run.choose()
        assert len(chosen) == 2 and {p.prompt_id for p in chosen} <= {1, 3, 4}
        assert context.dataset_filter == run.context.dataset_filter  # no shortfall: 3 pass, 2 asked for
        store = run.context.store
    with pytest.raises(Exception, match="closed"):  # the store opened for the run ends with it
        store.runs()


def test_open_run_takes_a_model_store_and_prompts_given(dataset: Path, tmp_path: Path) -> None:
    request = RunRequest(model=MODEL, dataset=str(dataset), store=tmp_path / "r.duckdb", show_progress=False)
    with open_run(request) as first, ResultsStore.open(tmp_path / "mine.duckdb") as store:
        prompts = first.prompts[:2]
        with open_run(request, loaded=first.loaded, store=store, prompts=prompts) as run:
            assert run.loaded is first.loaded and run.context.store is store and run.prompts == prompts
            assert isinstance(run.context.engine, FastEngine)
        store.runs()  # still open: the caller's
    with open_run(replace(request, filter="ids(77)")) as run, pytest.raises(ValueError, match="selects no prompt"):
        run.choose()


def test_make_engine(gpt2_model: torch.nn.Module) -> None:
    fast = make_engine("fast", gpt2_model, 3)
    assert isinstance(fast, FastEngine) and fast.max_batch == 3
    assert isinstance(make_engine("reference", gpt2_model), ReferenceEngine)
    with pytest.raises(ValueError, match="unknown engine 'slow'; choose fast or reference"):
        make_engine("slow", gpt2_model)


@pytest.fixture(scope="module")
def gpt2_model() -> torch.nn.Module:
    from infoflow.models import load_model

    return load_model(MODEL).model


# --- threads ---


@pytest.mark.parametrize(
    ("cpus", "load", "threads"), [(2, 0.1, 2), (2, 0.6, 1), (2, 1.7, 1), (2, 9.0, 1), (16, 0.0, 4), (16, 13.0, 3)]
)
def test_default_threads_leave_room_for_the_load(cpus: int, load: float, threads: int) -> None:
    assert default_threads(cpus, load) == threads


def test_threads_from_option_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFOFLOW_THREADS", "3")
    assert resolve_threads(None) == 3 and resolve_threads(2) == 2
    monkeypatch.setenv("INFOFLOW_THREADS", "many")
    with pytest.raises(ValueError, match=r"\$INFOFLOW_THREADS must be a positive number of threads, got 'many'"):
        resolve_threads(None)
    monkeypatch.delenv("INFOFLOW_THREADS")
    assert 1 <= resolve_threads(None) <= 4


def test_commands_apply_threads_and_record_the_device(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wide_consoles(monkeypatch)
    store = tmp_path / "r.duckdb"
    invoke("evaluate", "-m", MODEL, "-d", dataset, "--store", store, "--filter", "ids(0)", "-q", "--threads", 2)
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("INFOFLOW_THREADS", "3")
    invoke("evaluate", "-m", MODEL, "-d", dataset, "--store", store, "--filter", "ids(0)", "-q", "--device", "cpu")
    assert torch.get_num_threads() == 3
    with ResultsStore.open(store, read_only=True) as results:
        (run_id,) = results.runs()["run_id"]  # the same run twice: threads are not part of a run
        assert results.run(run_id).manifest.params["device"] == "cpu"  # auto resolved to the device used


# --- the shared options of the experiment commands ---


def options_of(command: str) -> dict[str, object]:
    click_command = typer.main.get_command(cli.app).commands[command]  # type: ignore[attr-defined]
    return {param.name: param.default for param in click_command.params}


def test_experiment_commands_share_their_options() -> None:
    shared = set(cli.RUN_OPTIONS)
    for command in ("evaluate", "info-flow", "heatmap"):
        assert shared <= set(options_of(command)), command
    attention = options_of("attention")
    assert shared - set(attention) == {"engine", "batch_size", "ray", "ray_workers"}
    assert [options_of(c)["filter"] for c in ("evaluate", "info-flow", "heatmap", "attention")] == [
        "all", "correct", "correct", "all"
    ]  # fmt: skip
    assert [options_of(c)["limit"] for c in ("evaluate", "info-flow", "heatmap", "attention")] == [None, None, 5, 1]
    assert options_of("evaluate")["device"] == "auto"
    assert {"--window-size", "--source", "--strict"} <= {
        opt
        for p in typer.main.get_command(cli.app).commands["info-flow"].params
        for opt in p.opts  # type: ignore[attr-defined]
    }


def test_app_gets_the_thread_count() -> None:
    from infoflow.app.launcher import streamlit_command

    assert streamlit_command(None, 8501, "localhost", threads=2)[1]["INFOFLOW_THREADS"] == "2"
