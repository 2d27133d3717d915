"""The results store: manifests, idempotent rows, resume, delete, export, refusals, locks, crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from infoflow.store import (
    SCHEMA_VERSION,
    Manifest,
    NotAStoreError,
    ResultsStore,
    RunStatus,
    SchemaVersionError,
    StoreError,
    UnknownRunError,
    default_store_path,
)
from infoflow.store.manifest import canonical_json


def _manifest(**overrides: Any) -> Manifest:
    fields: dict[str, Any] = {
        "kind": "info_flow",
        "model_id": "state-spaces/mamba-130m-hf",
        "model_revision": "abc123",
        "dataset": "counterfact",
        "dataset_filter": "correct top-1",
        "params": {"window_size": 9, "targets": ["last"], "sources": ["subject", "relation"], "mode": "zero-attention"},
    }
    return Manifest(**(fields | overrides))


def _flow_rows(prompts: range | list[int], windows: int = 3) -> list[dict[str, Any]]:
    return [
        {
            "prompt_id": p,
            "target": "last",
            "source": source,
            "feature_category": "all",
            "window_size": 9,
            "window_start": w,
            "p": 0.5 / (w + 1),
            "diff": -100 * w / (w + 1),
            "hit": w == 0,
        }
        for p in prompts
        for source in ("subject", "relation")
        for w in range(windows)
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultsStore]:
    with ResultsStore.open(tmp_path / "results.duckdb") as s:
        yield s


def test_default_path_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFOFLOW_STORE", raising=False)
    assert default_store_path() == Path("infoflow-results.duckdb")
    monkeypatch.setenv("INFOFLOW_STORE", "/x/y.duckdb")
    assert default_store_path() == Path("/x/y.duckdb")


def test_new_store_in_a_new_folder(tmp_path: Path) -> None:
    """A writable store creates its folder; reading a store that does not exist creates nothing."""
    path = tmp_path / "results" / "2026" / "r.duckdb"
    with pytest.raises(StoreError, match="no results store"):
        ResultsStore.open(path, read_only=True)
    assert not path.parent.exists()
    with ResultsStore.open(path) as store:
        run = store.start_run(_manifest())
    with ResultsStore.open(path, read_only=True) as store:
        assert store.run(run.run_id).manifest == _manifest()


def test_manifest_round_trip_and_identity(tmp_path: Path) -> None:
    manifest = _manifest(params={"windows": (1, 9), "mode": "zero-attention"}, n_prompts=10)
    assert manifest.params == {"mode": "zero-attention", "windows": [1, 9]}  # normalised to plain JSON
    with ResultsStore.open(tmp_path / "r.duckdb") as store:
        run = store.start_run(manifest)
    with ResultsStore.open(tmp_path / "r.duckdb", read_only=True) as store:
        again = store.run(run.run_id)
    assert again.manifest == manifest
    assert again.run_id == manifest.run_id and len(run.run_id) == 16
    # identity: key order does not matter, params and model revision do, progress and code version do not
    assert _manifest(params=dict(reversed(list(_manifest().params.items())))).run_id == _manifest().run_id
    assert _manifest(params={"window_size": 5}).run_id != _manifest().run_id
    assert _manifest(model_revision="def456").run_id != _manifest().run_id
    assert _manifest(n_prompts=3, package_version="9.9").run_id == _manifest().run_id


def test_rerun_resumes_into_the_same_run(tmp_path: Path) -> None:
    path = tmp_path / "r.duckdb"
    with ResultsStore.open(path) as store:
        run = store.start_run(_manifest())
        store.add_rows(run.run_id, _flow_rows([0, 1]))
        assert store.finish_run(run.run_id).status is RunStatus.COMPLETE
    with ResultsStore.open(path) as store:
        again = store.start_run(_manifest())
        assert again.run_id == run.run_id and again.status is RunStatus.RUNNING
        assert again.created_at == run.created_at
        assert store.completed_prompts(run.run_id) == {0, 1}
        runs = store.runs()
        assert list(runs["run_id"]) == [run.run_id] and runs["n_done"].iloc[0] == 2
        failed = store.finish_run(run.run_id, "failed", message="CUDA out of memory")
        assert (failed.status, failed.message) == (RunStatus.FAILED, "CUDA out of memory")


def test_idempotent_inserts(store: ResultsStore) -> None:
    run_id = store.start_run(_manifest()).run_id
    rows = _flow_rows(range(4))
    assert store.add_rows(run_id, rows) == len(rows)
    assert store.add_rows(run_id, rows) == 0
    assert store.add_rows(run_id, pd.DataFrame(rows)) == 0
    assert store.add_rows(run_id, rows[:2] + _flow_rows([4])) == len(_flow_rows([4]))  # only the new ones
    doubled = _flow_rows([5]) * 2  # a key twice in one batch: stored once
    assert store.add_rows(run_id, doubled) == len(doubled) // 2
    frame = store.frame(run_id)
    assert len(frame) == len(_flow_rows(range(6)))
    assert not frame.duplicated(["prompt_id", "source", "window_start"]).any()
    assert store.add_errors(run_id, {7: "subject not in prompt"}) == 1
    assert store.add_errors(run_id, {7: "subject not in prompt"}) == 0


def test_completed_prompts_and_done_keys(store: ResultsStore) -> None:
    run_id = store.start_run(_manifest()).run_id
    store.add_rows(run_id, _flow_rows([0, 1]))  # whole prompts: marked complete with their rows
    store.add_rows(run_id, _flow_rows([2])[:2], done=())  # part of prompt 2: not complete yet
    store.add_errors(run_id, {3: "subject ' Rome' not in prompt"})
    assert store.completed_prompts(run_id) == {0, 1, 3}
    assert store.completed_prompts(run_id, include_errors=False) == {0, 1}
    store.add_rows(run_id, _flow_rows([2])[2:], done=[2])
    assert store.completed_prompts(run_id, include_errors=False) == {0, 1, 2}
    keys = store.done_keys(run_id)
    assert len(keys) == len(_flow_rows(range(3)))
    assert (1, "last", "relation", "all", 9, 2) in keys
    assert store.done_keys(run_id, "errors") == {(3,)}
    assert store.frame(run_id, "errors")["reason"].tolist() == ["subject ' Rome' not in prompt"]


def test_row_tables_of_each_kind(store: ResultsStore) -> None:
    evaluate = store.start_run(_manifest(kind="evaluate", params={})).run_id
    top = [{"token": " Paris", "id": 6342, "p": 0.41}, {"token": " France", "id": 4881, "p": 0.07}]
    store.add_rows(evaluate, [{"prompt_id": 4, "p0": 0.41, "rank": 1, "correct": True, "top_tokens": top}])
    stored = store.frame(evaluate).iloc[0]
    assert (stored["p0"], stored["rank"], bool(stored["correct"])) == (0.41, 1, True)
    assert stored["top_tokens"] == canonical_json(top)

    heatmap = store.start_run(_manifest(kind="heatmap")).run_id
    tokens = ["The", " Eiffel"]
    cells = [
        {"prompt_id": 4, "window_size": 9, "window_start": w, "position": i, "token": t, "p": 0.1 * w}
        for w in range(2)
        for i, t in enumerate(tokens)
    ]
    assert store.add_rows(heatmap, pd.DataFrame(cells)) == 4
    assert store.frame(heatmap)[["window_start", "position"]].values.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]

    attention = store.start_run(_manifest(kind="attention")).run_id
    matrix = np.tril(np.ones((3, 3), dtype=np.float32))
    store.add_rows(attention, [{"prompt_id": 4, "layer": 0, "feature": "mean", "matrix": matrix}])
    assert np.array_equal(np.array(store.frame(attention)["matrix"].iloc[0].tolist(), dtype=np.float32), matrix)


def test_invalid_rows_are_refused(store: ResultsStore) -> None:
    run_id = store.start_run(_manifest()).run_id
    row = _flow_rows([0])[0]
    with pytest.raises(ValueError, match="unknown columns \\['windowstart'\\]"):
        store.add_rows(run_id, [{**row, "windowstart": 1}])
    with pytest.raises(ValueError, match="lack required columns \\['hit'\\]"):
        store.add_rows(run_id, [{k: v for k, v in row.items() if k != "hit"}])
    with pytest.raises(ValueError, match=r"info_flow\.p is required"):
        store.add_rows(run_id, [{**row, "p": None}])
    with pytest.raises(ValueError, match=r"info_flow\.window_start: cannot store"):
        store.add_rows(run_id, [{**row, "window_start": "first"}])
    assert store.frame(run_id).empty and store.completed_prompts(run_id) == set()


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "r.duckdb"
    with ResultsStore.open(path) as store:
        run_id = store.start_run(_manifest()).run_id
    with ResultsStore.open(path, read_only=True) as store, pytest.raises(StoreError, match="open read-only"):
        store.add_rows(run_id, _flow_rows([0]))


def test_delete_run(store: ResultsStore) -> None:
    keep = store.start_run(_manifest()).run_id
    gone = store.start_run(_manifest(model_revision="other")).run_id
    for run_id in (keep, gone):
        store.add_rows(run_id, _flow_rows([0, 1]))
        store.add_errors(run_id, {2: "empty relation"})
    store.delete_run(gone[:6])  # a unique prefix is enough
    assert list(store.runs()["run_id"]) == [keep]
    assert len(store.frame(keep)) == len(_flow_rows([0, 1])) and store.completed_prompts(keep) == {0, 1, 2}
    for table in ("info_flow", "errors", "completed"):
        with store._connection.use() as con:
            assert con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", [gone]).fetchall() == [(0,)]
    with pytest.raises(UnknownRunError, match="matches no run"):
        store.run(gone)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("kind", ["info_flow", "evaluate"])
def test_export_reads_back_equal(store: ResultsStore, tmp_path: Path, fmt: str, kind: str) -> None:
    run_id = store.start_run(_manifest(kind=kind)).run_id
    if kind == "info_flow":
        rows = pd.DataFrame(_flow_rows(range(3))).assign(p0=0.5)
    else:
        rows = pd.DataFrame(
            {
                "prompt_id": [3, 1],
                "p0": [0.25, 1e-7],
                "rank": [1, 40],
                "correct": [True, False],
                "target_token": [" Paris", ' "Rome"'],
                "target_token_id": [6342, 17],
                "top_tokens": [[{"token": " Paris", "p": 0.25}], [{"token": ", x", "p": 0.5}]],
                "prompt": ["The Eiffel Tower is in", "Colosseum, in"],
                "subject": [" Eiffel Tower", "Colosseum"],
                "target": [" Paris", " Rome"],
            }
        )
    store.add_rows(run_id, rows)
    expected = store.frame(run_id)
    path = store.export(run_id, tmp_path / "out" / f"{kind}.{fmt}")
    back = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path, keep_default_na=False, na_values=[""])
    if kind == "evaluate":  # Parquet tags the JSON column (arrow.json); its values are the same text
        back["top_tokens"] = back["top_tokens"].astype(expected["top_tokens"].dtype)
    pd.testing.assert_frame_equal(back, expected, check_dtype=fmt == "parquet")
    if fmt == "parquet":
        exported = pq.read_schema(path).metadata[b"infoflow.run"].decode()
        assert f'"run_id":"{run_id}"' in exported and '"model_revision":"abc123"' in exported


def test_polars_frame(store: ResultsStore) -> None:
    pytest.importorskip("polars")
    run_id = store.start_run(_manifest()).run_id
    store.add_rows(run_id, _flow_rows([0]))
    assert store.frame(run_id, polars=True).height == len(_flow_rows([0]))


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(os.urandom(8192))
    with pytest.raises(NotAStoreError, match="is not a DuckDB database"):
        ResultsStore.open(garbage)

    damaged = tmp_path / "damaged.duckdb"  # a store whose header block is overwritten
    ResultsStore.open(damaged).close()
    with damaged.open("r+b") as f:
        f.seek(4096)
        f.write(os.urandom(4096))
    with pytest.raises(StoreError, match=r"cannot open results store .*Corrupt database file"):
        ResultsStore.open(damaged)

    foreign = tmp_path / "foreign.duckdb"
    with duckdb.connect(str(foreign)) as con:
        con.execute("CREATE TABLE measurements (x INTEGER)")
    with pytest.raises(NotAStoreError, match="DuckDB database but not an infoflow results store"):
        ResultsStore.open(foreign)

    future = tmp_path / "future.duckdb"
    ResultsStore.open(future).close()
    with duckdb.connect(str(future)) as con:
        con.execute("UPDATE infoflow_meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 98)])
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 98}.*upgrade infoflow"):
        ResultsStore.open(future, read_only=True)

    with pytest.raises(StoreError, match="no results store at"):
        ResultsStore.open(tmp_path / "missing.duckdb", read_only=True)

    empty = tmp_path / "empty.duckdb"  # an empty DuckDB database becomes a store
    duckdb.connect(str(empty)).close()
    ResultsStore.open(empty).close()
    ResultsStore.open(empty, read_only=True).close()


_TRY_OPEN = """
import sys
from infoflow.store import ResultsStore, StoreError
try:
    with ResultsStore.open(sys.argv[1], read_only=sys.argv[2] == "ro") as store:
        print("opened", len(store.runs()))
except StoreError as e:
    print(type(e).__name__, e)
"""


def _try_open(path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _TRY_OPEN, str(path), mode], capture_output=True, text=True, timeout=60
    )


def test_second_writer_is_refused_and_readers_read_while_a_process_writes(tmp_path: Path) -> None:
    path = tmp_path / "r.duckdb"
    with ResultsStore.open(path) as store:
        store.start_run(_manifest())
        done = _try_open(path, "rw")
        assert done.stderr == ""  # no traceback
        assert done.stdout.startswith(f"StoreLockedError store {path} is in use by another process (pid {os.getpid()})")
        assert "use another --store" in done.stdout
        assert _try_open(path, "ro").stdout == "opened 1\n"  # a reader reads while this process writes
        store.start_run(_manifest(model_revision="second"))  # and the writer writes on after it
        assert _try_open(path, "ro").stdout == "opened 2\n"
    with ResultsStore.open(path, read_only=True):  # readers share the store
        assert _try_open(path, "ro").stdout == "opened 2\n"


_WRITER = """
import sys
import numpy as np
import pandas as pd
from infoflow.store import Manifest, ResultsStore

ROWS = int(sys.argv[2])
manifest = Manifest("info_flow", "m", "r", "d", params={"crash": True})
with ResultsStore.open(sys.argv[1]) as store:
    run_id = store.start_run(manifest).run_id
    prompt = max(store.completed_prompts(run_id), default=-1) + 1
    while True:
        rows = pd.DataFrame({
            "prompt_id": prompt, "target": "last", "source": "subject", "feature_category": "all",
            "window_size": 9, "window_start": np.arange(ROWS), "p": np.random.rand(ROWS),
            "diff": np.random.randn(ROWS), "hit": np.random.rand(ROWS) > 0.5,
        })
        store.add_rows(run_id, rows)
        print(prompt, flush=True)
        prompt += 1
"""


def test_sigkill_mid_write_leaves_whole_batches(tmp_path: Path) -> None:
    path, rows = tmp_path / "crash.duckdb", 20_000
    for trial in range(4):  # each trial resumes the run the last one left
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(rows)], stdout=subprocess.PIPE, text=True
        )
        acknowledged = [int(writer.stdout.readline()) for _ in range(2 + trial)]
        time.sleep(0.013 * trial)  # land the kill at different points of a write
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        writer.stdout.close()

        with ResultsStore.open(path) as store:
            (run,) = store.runs().itertuples()
            assert run.status == "partial"  # left 'running' by a dead process
            counts = store.frame(run.run_id).groupby("prompt_id").size()
            assert (counts == rows).all()  # whole batches only
            assert set(counts.index) == store.completed_prompts(run.run_id)
            assert set(acknowledged) <= set(counts.index)  # every committed batch survived
            assert sorted(counts.index) == list(range(len(counts)))  # resumed where the last trial stopped
