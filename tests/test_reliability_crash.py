"""Crash safety: ``kill -9`` at random moments of a run never loses or corrupts results, and a store that is not
ours (foreign, corrupted, another schema version) is refused with a message."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from infoflow.cli import app
from infoflow.store import ResultsStore
from tests.cli_support import assert_rows_match

KILLS = 5
N_PROMPTS = 40
SEED = int(os.environ.get("INFOFLOW_CRASH_SEED", "20250"))


def run_args(store: Path) -> list[str]:
    return [
        "info-flow", "--model", "builtin-gpt2", "--dataset", "synthetic", "--filter", "all",
        "--limit", str(N_PROMPTS), "--window-size", "4", "--store", str(store), "--quiet",
    ]  # fmt: skip


def infoflow_process(store: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", "from infoflow.cli import main; main()", *run_args(store)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def timed_run(store: Path) -> tuple[float, float]:
    """An uninterrupted run in a subprocess: (seconds until its store file exists, seconds in all)."""
    process = infoflow_process(store)
    started = time.monotonic()
    while not store.exists() and process.poll() is None:
        time.sleep(0.01)
    startup = time.monotonic() - started
    assert process.wait() == 0, process.stderr.read().decode() if process.stderr else ""
    return startup, time.monotonic() - started


def kill_at_random(store: Path, rng: random.Random, startup: float, work: float) -> str:
    """Start a run and SIGKILL it after a random delay: while it starts (a quarter of the time) or while it
    computes and writes, at most ``work / (2 * KILLS)`` seconds in: the killed runs together do at most half the
    work, so each kill comes before the end even if the machine runs twice as fast as during the uninterrupted
    run (a loaded machine's speed varies). ``startup`` and ``work`` are measured on that run. Returns where the
    kill landed."""
    process = infoflow_process(store)
    starting = rng.random() < 0.25
    delay = rng.uniform(0.3, startup) if starting else startup + rng.uniform(0.0, work / (2 * KILLS))
    deadline = time.monotonic() + delay
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if process.poll() is not None:
        assert process.returncode == 0, process.stderr.read().decode() if process.stderr else ""
        return "finished before the kill"
    process.send_signal(signal.SIGKILL)
    process.wait()
    return "killed while writing" if delay > startup else "killed while starting"


def rows_and_errors(store: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    with ResultsStore.open(store, read_only=True) as results:
        runs = results.runs()
        (run_id,) = runs.loc[runs["kind"] == "info_flow", "run_id"]
        status = str(results.run(run_id).status)
        return results.frame(run_id), results.frame(run_id, "errors"), status


def test_kill_9_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    """Kill a run repeatedly, check that the store opens after each kill, resume to the end: the rows equal those
    of an uninterrupted run (keys and values), without duplicates."""
    rng = random.Random(SEED)
    startup, total = timed_run(tmp_path / "reference.duckdb")  # the uninterrupted run
    store = tmp_path / "killed.duckdb"
    outcomes = []
    for _ in range(KILLS):
        outcomes.append(kill_at_random(store, rng, startup, total - startup))
        if store.exists():
            with ResultsStore.open(store, read_only=True) as results:  # the store always opens after a kill
                results.runs()
    result = CliRunner().invoke(app, run_args(store))  # resume the killed run to its end
    assert result.exit_code == 0, result.output

    rows, errors, status = rows_and_errors(store)
    expected_rows, expected_errors, _ = rows_and_errors(tmp_path / "reference.duckdb")
    assert status == "complete"
    assert sum(o.startswith("killed") for o in outcomes) >= 3, outcomes
    keys = ["prompt_id", "target", "source", "feature_category", "window_size", "window_start"]
    assert not rows.duplicated(keys).any()
    assert rows["prompt_id"].nunique() == N_PROMPTS
    assert errors.empty and expected_errors.empty
    assert_rows_match(rows, expected_rows)  # chunks of other sizes, other thread counts: fp32 noise


def test_empty_file_left_by_a_crash_while_creating_is_a_new_store(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    store.touch()  # DuckDB creates the file before writing its header: a kill in between leaves it empty
    with ResultsStore.open(store) as results:
        assert results.runs().empty


def cli_refusal(args: list[str]) -> str:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and result.output.count("error:") == 1
    return result.output


def valid_store(path: Path) -> Path:
    with ResultsStore.open(path) as results:
        results.runs()
    return path


@pytest.mark.parametrize("command", [["runs", "list"], ["info-flow", "--model", "builtin-gpt2", "--filter", "all"]])
def test_foreign_corrupted_and_other_version_stores_are_refused(command: list[str], tmp_path: Path) -> None:
    foreign = tmp_path / "notes.txt"
    foreign.write_text("my notes, not a database\n")
    assert "is not a DuckDB database" in cli_refusal([*command, "--store", str(foreign)])
    assert foreign.read_text() == "my notes, not a database\n"  # left as it was

    other_db = tmp_path / "other.duckdb"
    with duckdb.connect(str(other_db)) as con:
        con.execute("CREATE TABLE t (x INTEGER)")
    assert "not an infoflow results store" in cli_refusal([*command, "--store", str(other_db)])

    newer = valid_store(tmp_path / "newer.duckdb")
    with duckdb.connect(str(newer)) as con:
        con.execute("UPDATE infoflow_meta SET value = '99' WHERE key = 'schema_version'")
    assert "schema version 99" in cli_refusal([*command, "--store", str(newer)])

    corrupted = valid_store(tmp_path / "corrupted.duckdb")
    data = bytearray(corrupted.read_bytes())
    data[:4096] = os.urandom(4096)
    corrupted.write_bytes(bytes(data))
    cli_refusal([*command, "--store", str(corrupted)])

    truncated = valid_store(tmp_path / "truncated.duckdb")
    truncated.write_bytes(truncated.read_bytes()[:5000])
    cli_refusal([*command, "--store", str(truncated)])
