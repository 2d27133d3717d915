"""Concurrency: while a run writes to a store, a second writer gets a clear lock message and readers read it
(the run shows as running); the run loses no row and the store stays whole."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from infoflow.cli import app
from infoflow.store import ResultsStore

N_PROMPTS = 12


def run_args(store: Path) -> list[str]:
    return [
        "info-flow", "--model", "builtin-gpt2", "--dataset", "synthetic", "--filter", "all",
        "--limit", str(N_PROMPTS), "--window-size", "4", "--store", str(store), "--quiet",
    ]  # fmt: skip


# The writer's engine waits, inside its run (store open), until the test releases it: the contention is certain
# whatever the machine's speed.
HELD_WRITER = """
import pathlib, sys, time
from infoflow.engines.fast import FastEngine
computing, release = map(pathlib.Path, sys.argv[1:3])
del sys.argv[1:3]
real_scores_many = FastEngine.scores_many

def held_scores_many(self, requests):
    computing.touch()
    deadline = time.monotonic() + 120
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return real_scores_many(self, requests)

FastEngine.scores_many = held_scores_many
from infoflow.cli import main
main()
"""


def test_second_writer_refused_and_reader_reads_during_a_run(tmp_path: Path) -> None:
    store, computing, release = tmp_path / "s.duckdb", tmp_path / "computing", tmp_path / "release"
    writer = subprocess.Popen(
        [sys.executable, "-c", HELD_WRITER, str(computing), str(release), *run_args(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        started = time.monotonic()
        while not computing.exists() and writer.poll() is None and time.monotonic() - started < 120:
            time.sleep(0.02)
        assert computing.exists(), writer.stderr.read().decode() if writer.stderr else "the writer never ran"
        runner = CliRunner()
        second = runner.invoke(app, run_args(store), env={"COLUMNS": "400"})  # the same run, a second writer
        reader = runner.invoke(app, ["runs", "list", "--store", str(store)], env={"COLUMNS": "400"})
    finally:
        release.touch()
    assert writer.wait(timeout=120) == 0, writer.stderr.read().decode() if writer.stderr else ""
    # the second writer bounced off the writer's lock with a message that says what to do
    assert second.exit_code == 1, second.output
    assert "is in use by another process (pid" in second.output and "wait for it to finish" in second.output
    assert "Traceback" not in second.output
    assert reader.exit_code == 0, reader.output  # the reader read while the run was computing
    assert "running" in reader.output and "builtin-gpt2" in reader.output
    with ResultsStore.open(store, read_only=True) as results:
        (run_id,) = results.runs()["run_id"]
        rows = results.frame(run_id)
        assert results.run(run_id).status == "complete"
    assert rows["prompt_id"].nunique() == N_PROMPTS
    assert not rows.duplicated(["prompt_id", "target", "source", "feature_category", "window_start"]).any()


def test_run_refused_while_another_process_reads(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    with ResultsStore.open(store) as results:
        results.runs()
    code = f"import duckdb, time; c = duckdb.connect({str(store)!r}, read_only=True); print('ready', flush=True)"
    code += "; time.sleep(60)"
    reader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
        result = CliRunner().invoke(app, run_args(store), env={"COLUMNS": "400"})
        assert result.exit_code == 1, result.output
        assert "is in use by another process" in result.output and "Traceback" not in result.output
    finally:
        reader.kill()
        reader.wait()
    with ResultsStore.open(store, read_only=True) as results:
        assert results.runs().empty  # refused before any work
