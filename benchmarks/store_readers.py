"""What readers cost a run that writes: the writer's time per chunk with no reader, with a reader polling now and
then (the web app's live page), and with a reader reading without pause (the worst case).

The writer stores chunks of info-flow rows as a run does (``--prompts`` prompts of ``--rows`` rows per chunk,
one transaction each) and "computes" ``--compute`` seconds between chunks (sleeping, like a process waiting on
its GPU). Each reader is a second process that opens the store read-only and reads the list of runs (as
``infoflow runs list`` and the app's live page do), or also all the rows of the run (a figure's worth). Prints
seconds per chunk beside the time with no reader, and how many reads succeeded and how long the slowest took.

    python -m benchmarks.store_readers --chunks 40 --compute 0.15
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from infoflow.store import Manifest, ResultsStore

READER = """
import sys, time
from infoflow.store import ResultsStore
path, pause, stop, rows = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4] == "rows"
import pathlib
reads, slowest = 0, 0.0
while not pathlib.Path(stop).exists():
    started = time.perf_counter()
    with ResultsStore.open(path, read_only=True) as store:
        runs = store.runs()
        if rows and len(runs):
            store.frame(runs["run_id"].iloc[0])
    slowest = max(slowest, time.perf_counter() - started)
    reads += 1
    time.sleep(pause)
print(reads, slowest)
"""


def chunk_rows(chunk: int, prompts: int, rows: int) -> pd.DataFrame:
    """``prompts`` prompts of ``rows`` info-flow rows each (4 sources x rows/4 windows)."""
    ids = np.repeat(np.arange(chunk * prompts, (chunk + 1) * prompts), rows)
    per = np.tile(np.arange(rows), prompts)
    return pd.DataFrame(
        {
            "prompt_id": ids,
            "target": "last",
            "source": np.array(["subject", "relation", "last", "first"])[per % 4],
            "feature_category": "all",
            "window_size": 9,
            "window_start": per // 4,
            "p": np.random.rand(len(ids)),
            "diff": np.random.randn(len(ids)),
            "hit": np.random.rand(len(ids)) > 0.5,
        }
    )


def write_run(path: Path, chunks: int, prompts: int, rows: int, compute: float) -> float:
    """Seconds per chunk (compute + store) of a run writing ``chunks`` chunks."""
    manifest = Manifest("info_flow", "bench", "r", "d", params={"at": time.time()})
    data = [chunk_rows(c, prompts, rows) for c in range(chunks)]
    with ResultsStore.open(path) as store:
        run_id = store.start_run(manifest).run_id
        started = time.perf_counter()
        for rows_of_chunk in data:
            time.sleep(compute)
            store.add_rows(run_id, rows_of_chunk)
        store.finish_run(run_id)
    return (time.perf_counter() - started) / chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--prompts", type=int, default=32, help="prompts per chunk")
    parser.add_argument("--rows", type=int, default=160, help="rows per prompt (4 sources x 40 windows)")
    parser.add_argument("--compute", type=float, default=0.15, help="seconds of 'compute' per chunk")
    args = parser.parse_args()
    table = Table("readers", "s per chunk", "vs no reader", "reads", "slowest read (s)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.duckdb"
        alone = write_run(path, args.chunks, args.prompts, args.rows, args.compute)
        table.add_row("none", f"{alone:.3f}", "1.00", "-", "-")
        readers = [
            ("runs list every 1 s", 1.0, "list"),
            ("rows every 1 s", 1.0, "rows"),
            ("rows, no pause", 0.0, "rows"),
        ]
        for label, pause, reads in readers:
            stop = Path(folder) / "stop"
            stop.unlink(missing_ok=True)
            reader = subprocess.Popen(
                [sys.executable, "-c", READER, str(path), str(pause), str(stop), reads],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1.0)  # the reader has started
            per_chunk = write_run(path, args.chunks, args.prompts, args.rows, args.compute)
            stop.touch()
            output = reader.communicate(timeout=120)[0]
            reads, slowest = output.split()[-2:]
            table.add_row(label, f"{per_chunk:.3f}", f"{per_chunk / alone:.2f}", reads, f"{float(slowest):.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
