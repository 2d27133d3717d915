"""A store read while another process writes it: readers see every committed chunk (whole prompts only, never
fewer than before), the run shows as running, then complete; the writer loses nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from infoflow.app.runs import runs_table
from infoflow.app.store_access import open_store
from infoflow.store import Manifest, ResultsStore

CHUNKS, PROMPTS, ROWS = 24, 4, 40  # a chunk: PROMPTS prompts of ROWS rows

# A run that computes for a while before each chunk, as a real one does, and says when each chunk is committed.
WRITER = """
import sys, time
import numpy as np
import pandas as pd
from infoflow.store import Manifest, ResultsStore

path, chunks, prompts, rows = sys.argv[1], *map(int, sys.argv[2:5])
with ResultsStore.open(path) as store:
    run_id = store.start_run(Manifest("info_flow", "m", "r", "d", params={"live": True})).run_id
    print("started", flush=True)
    for chunk in range(chunks):
        time.sleep(0.15)  # computing
        ids = np.repeat(np.arange(chunk * prompts, (chunk + 1) * prompts), rows)
        store.add_rows(run_id, pd.DataFrame({
            "prompt_id": ids, "target": "last", "source": "subject", "feature_category": "all", "window_size": 9,
            "window_start": np.tile(np.arange(rows), prompts), "p": 0.5, "diff": -1.0, "hit": True,
        }))
        print("committed", chunk, flush=True)
    store.finish_run(run_id)
"""


def test_readers_see_committed_chunks_while_another_process_writes(tmp_path: Path) -> None:
    path = tmp_path / "live.duckdb"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(CHUNKS), str(PROMPTS), str(ROWS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline() == "started\n", writer.stderr
    seen: list[tuple[str, int]] = []  # (status, prompts) at each read
    while writer.poll() is None:
        with ResultsStore.open(path, read_only=True) as store:  # as `infoflow runs list` and the report do
            (run,) = store.runs().itertuples()
            rows = store.frame(run.run_id)
        counts = rows.groupby("prompt_id").size()
        # whole prompts only; two reads are two moments, so the rows may hold a chunk more than the count before
        assert (counts == ROWS).all() and len(counts) >= run.n_done
        seen.append((run.status, run.n_done))
        with open_store(path) as store:  # as the app's pages do
            assert runs_table(store)["rows"].iloc[0] >= len(rows)
        time.sleep(0.3)  # a page that refreshes itself
    assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ""
    done = [n for _, n in seen]
    assert done == sorted(done), "a reader saw fewer prompts than before"
    during = {n for status, n in seen if status == "running"}
    assert len(during) >= 2 and max(during) < CHUNKS * PROMPTS, seen  # it watched the run fill
    with ResultsStore.open(path, read_only=True) as store:
        (run,) = store.runs().itertuples()
        assert (run.status, run.n_done, run.n_rows) == ("complete", CHUNKS * PROMPTS, CHUNKS * PROMPTS * ROWS)


def test_a_reader_that_holds_the_store_lets_a_writer_in(tmp_path: Path) -> None:
    """A reader keeps its connection between reads, and lets go when a writer (here, another process) asks."""
    path = tmp_path / "held.duckdb"
    with ResultsStore.open(path) as store:
        store.runs()
    with ResultsStore.open(path, read_only=True) as reader:
        assert reader.runs().empty  # the reader holds the file now
        started = time.monotonic()
        writer = subprocess.run(
            [sys.executable, "-c", WRITER, str(path), "2", "1", "3"], capture_output=True, text=True, timeout=120
        )
        assert writer.returncode == 0, writer.stderr
        assert time.monotonic() - started < 60
        (run,) = reader.runs().itertuples()  # and reads what was written meanwhile
        assert (run.status, run.n_done) == ("complete", 2)


def test_a_writer_keeps_its_rows_while_a_reader_holds_the_store(tmp_path: Path) -> None:
    """The run does not wait for a reader: its chunk is kept and written, in order, by its next operation."""
    path = tmp_path / "kept.duckdb"
    rows = [
        {"prompt_id": p, "target": "last", "source": "subject", "feature_category": "all", "window_size": 9}
        | {"window_start": 0, "p": 0.5, "diff": -1.0, "hit": True}
        for p in range(3)
    ]
    with ResultsStore.open(path) as writer, ResultsStore.open(path, read_only=True) as reader:
        run_id = writer.start_run(Manifest("info_flow", "m", "r", "d")).run_id
        assert reader.runs()["status"].tolist() == ["running"]  # the reader has the file now
        started = time.monotonic()
        assert writer.add_rows(run_id, rows[:2]) == 0 and writer.add_rows(run_id, rows[2:]) == 0  # kept
        assert time.monotonic() - started < 1.0  # without waiting for the reader
        assert reader.frame(run_id).empty
        assert writer.completed_prompts(run_id) == {0, 1, 2}  # the writer's next operation writes them
        assert reader.frame(run_id)["prompt_id"].tolist() == [0, 1, 2]
