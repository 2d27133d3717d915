"""Scale-out on Ray (``--ray``), on a local 2-CPU Ray cluster started by the test: distributed runs store the same
rows under the same run as local ones, a worker killed mid-run is restarted and its chunk run again, and a
driver interrupted mid-run resumes (here locally) into rows equal to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import ray

from infoflow.data import load_dataset
from infoflow.data.spans import TokenType
from infoflow.engines.fast import FastEngine
from infoflow.experiments import runner
from infoflow.experiments.distributed import RayExecutor, WorkerSpec
from infoflow.experiments.info_flow import InfoFlowParams, info_flow_job, info_flow_manifest_params
from infoflow.experiments.runner import Chunk, ChunkJob, ModelContext, RunContext, run_prompts
from infoflow.models import load_model
from infoflow.store import ResultsStore
from tests.cli_support import (
    FLOW_KEYS,
    MODEL,
    SYNTHETIC_IDS,
    assert_rows_match,
    invoke,
    wide_consoles,
    write_facts_csv,
)

FLOW = ["info-flow", "-m", MODEL, "-w", "4", "--source", "subject", "--source", "last", "--filter", "all", "-q"]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    """One local cluster for the module; the CLI's ``--ray local`` joins it instead of starting its own."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_facts_csv(tmp_path_factory.mktemp("data"))


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide consoles, the default store in tmp, and one prompt per chunk so that both workers get chunks."""
    wide_consoles(monkeypatch)
    monkeypatch.setenv("INFOFLOW_STORE", str(tmp_path / "default.duckdb"))
    original_run_prompts = runner.run_prompts
    monkeypatch.setattr(runner, "run_prompts", lambda *a, **k: original_run_prompts(*a, **{**k, "chunk_size": 1}))


@pytest.fixture(scope="module")
def local_store(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: evaluate (for the filter 'correct') and info-flow run locally."""
    store = tmp_path_factory.mktemp("local") / "local.duckdb"
    invoke(*FLOW, "-d", dataset, "--store", store)
    invoke("evaluate", "-m", MODEL, "-d", dataset, "--store", store, "-q")
    return store


def runs_of(store: Path) -> pd.DataFrame:
    with ResultsStore.open(store, read_only=True) as results:
        return results.runs().set_index("kind")


def rows_of(store: Path, kind: str) -> pd.DataFrame:
    with ResultsStore.open(store, read_only=True) as results:
        return results.frame(str(runs_of(store).loc[kind, "run_id"])).drop(columns=["run_id"], errors="ignore")


def assert_same_rows(store: Path, reference: Path, kind: str = "info_flow", keys: list[str] = FLOW_KEYS) -> None:
    """The same run (same manifest, so same run id), complete, with the same rows: keys equal, numbers within
    fp32 noise, no duplicate."""
    runs, expected_runs = runs_of(store), runs_of(reference)
    assert runs.loc[kind, "run_id"] == expected_runs.loc[kind, "run_id"]
    assert runs.loc[kind, "status"] == "complete" and runs.loc[kind, "n_done"] == expected_runs.loc[kind, "n_done"]
    frame = rows_of(store, kind).sort_values(keys).reset_index(drop=True)
    expected = rows_of(reference, kind).sort_values(keys).reset_index(drop=True)
    assert not frame.duplicated(keys).any()
    assert list(frame.columns) == list(expected.columns)
    assert_rows_match(frame, expected)


def test_distributed_run_equals_a_local_run(dataset: Path, local_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "ray.duckdb"
    invoke(*FLOW, "-d", dataset, "--store", store, "--ray", "local")
    invoke("evaluate", "-m", MODEL, "-d", dataset, "--store", store, "-q", "--ray", "local", "--ray-workers", "2")
    assert_same_rows(store, local_store)
    assert_same_rows(store, local_store, "evaluate", ["prompt_id"])
    assert len(rows_of(store, "info_flow")) == len(SYNTHETIC_IDS) * 2 * 5


def killing_job(marker: Path, victim: int, params: InfoFlowParams, context: ModelContext) -> ChunkJob:
    """The info-flow chunk job, except that the first worker to get prompt ``victim`` kills its own process."""
    job = info_flow_job(params, context)

    def chunk_job(chunk: Chunk) -> list:
        if any(prompt.prompt_id == victim for prompt, _ in chunk) and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return job(chunk)

    return chunk_job


def test_a_worker_killed_mid_run_is_restarted_and_no_row_is_lost(
    dataset: Path, local_store: Path, tmp_path: Path
) -> None:
    store, marker = tmp_path / "killed.duckdb", tmp_path / "killed"
    loaded = load_model(MODEL)
    params = InfoFlowParams(sources=(TokenType.SUBJECT, TokenType.LAST), window_sizes=(4,))  # as FLOW
    job = partial(killing_job, marker, 3, params)
    executor = RayExecutor(WorkerSpec(MODEL), "local", workers=2)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    try:
        with ResultsStore.open(store) as results:
            context = RunContext(loaded, FastEngine(loaded.model), results, str(dataset), "all", False, executor)
            run_prompts(context, "info_flow", info_flow_manifest_params(params), load_dataset(str(dataset)), job)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        executor.close()
    assert marker.exists()  # a worker did die
    assert_same_rows(store, local_store)


def test_an_interrupted_driver_resumes_into_the_same_rows(
    dataset: Path, local_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "interrupted.duckdb"
    original_store_rows = runner.store_rows
    calls = []

    def interrupting_store_rows(*args: Any) -> None:
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the driver dies after storing two chunks (Ctrl-C, or a kill: nothing more stored)
        original_store_rows(*args)

    monkeypatch.setattr(runner, "store_rows", interrupting_store_rows)
    invoke(*FLOW, "-d", dataset, "--store", store, "--ray", "local", code=130)
    assert runs_of(store).loc["info_flow", "status"] == "partial"
    assert runs_of(store).loc["info_flow", "n_done"] == 2
    monkeypatch.setattr(runner, "store_rows", original_store_rows)
    invoke(*FLOW, "-d", dataset, "--store", store)  # resumed locally: the other 4 prompts
    assert_same_rows(store, local_store)
