"""Runs as people use them: what changes a number makes another run (dtype, device type), stores made before
schema 2, names and tags, the runs commands, the store interface with its export writers, and light imports."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from infoflow.experiments.info_flow import InfoFlowParams, info_flow_manifest_params
from infoflow.experiments.runner import RunLabel, start_run
from infoflow.naming import QUIET_PARAMS, derived_run_name, short_filter
from infoflow.store import Manifest, ResultsStore, StoreError, StoreWarning, UnknownRunError, base
from infoflow.store.duckdb import DuckDBStore
from infoflow.store.schema import COMPLETED, META_TABLE, row_tables
from tests.cli_support import invoke, wide_consoles, write_facts_csv

FLOW_PARAMS: dict[str, Any] = {**info_flow_manifest_params(InfoFlowParams(window_sizes=(4,))), "n_layers": 8}
NEW_PARAMS = {"engine": "fast", "dtype": "float32", "device": "cpu"}


def manifest(kind: str = "info_flow", **params: Any) -> Manifest:
    return Manifest(kind, "builtin-mamba1", "abc123", "synthetic", "correct", params={**FLOW_PARAMS, **params})


def flow_rows(prompts: range | list[int]) -> list[dict[str, Any]]:
    return [
        {"prompt_id": p, "target": "last", "source": "subject", "feature_category": "all", "window_size": 4}
        | {"window_start": w, "p": 0.1 * w, "diff": -10.0 * w, "hit": w == 0}
        for p in prompts
        for w in range(5)
    ]


def test_light_imports() -> None:
    """Reports, figures and the store (until a store is opened) import neither torch nor the DuckDB backend."""
    code = (
        "import sys, infoflow.report, infoflow.plots, infoflow.store, infoflow.store.summary, infoflow.naming; "
        "print(sorted(m for m in ('torch', 'transformers', 'duckdb', 'infoflow.store.duckdb') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stderr


def test_quiet_params_are_the_defaults_of_the_experiments() -> None:
    defaults = info_flow_manifest_params(InfoFlowParams())
    for key in ("targets", "sources", "feature_categories", "mode", "strict", "exempt_fraction"):
        assert QUIET_PARAMS[key] == defaults[key], key


def test_derived_names_and_short_filters() -> None:
    assert derived_run_name("builtin-mamba1", "info_flow", {**FLOW_PARAMS, **NEW_PARAMS, "dtype": "bfloat16"}) == (
        "builtin-mamba1 · info_flow · ws4 · bf16"
    )
    params = {**FLOW_PARAMS, **NEW_PARAMS, "strict": True, "feature_categories": ["all", "fast_decay"]}
    assert derived_run_name("/m/folder/mamba", "info_flow", {**params, "device": "cuda", "engine": "reference"}) == (
        "mamba · info_flow · ws4 · features=all,fast_decay · strict · reference · cuda"
    )
    assert derived_run_name("gpt2", "attention", {"layers": [0, 2], "per_feature": True}) == (
        "gpt2 · attention · layers=0,2 · per-feature"
    )
    assert short_filter("ids(3, 10,200) | sample 2 (seed 0)") == "ids(3 prompts) | sample 2 (seed 0)"
    assert short_filter("correct and " * 5, width=20) == "correct and correct…"


def test_dtype_and_device_type_make_another_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the command: a bf16 run of the same command is a run of its own, and resumes into itself."""
    wide_consoles(monkeypatch)
    data, store = write_facts_csv(tmp_path), tmp_path / "s.duckdb"
    command = ["evaluate", "-m", "builtin-mamba1", "-d", data, "--store", store, "-q"]
    invoke(*command, "--dtype", "bfloat16")
    invoke(*command)
    invoke(*command, "--dtype", "bfloat16")  # resumes the bf16 run: nothing new
    with ResultsStore.open(store, read_only=True) as results:
        runs = results.runs().set_index("name")
        assert sorted(runs.index) == ["builtin-mamba1 · evaluate", "builtin-mamba1 · evaluate · bf16"]
        bf16, fp32 = (json.loads(runs.loc[n, "params"]) for n in sorted(runs.index)[::-1])
        assert (bf16["dtype"], fp32["dtype"], bf16["device"], bf16["engine"]) == ("bfloat16", "float32", "cpu", "fast")
        assert {k: v for k, v in bf16.items() if k != "dtype"} == {k: v for k, v in fp32.items() if k != "dtype"}
        assert (runs["n_done"] == 6).all()
        p0 = [results.frame(r)["p0"].to_numpy() for r in runs["run_id"]]
    assert not np.array_equal(*p0) and np.allclose(*p0, rtol=0.1, atol=0.02)  # bf16 moves the numbers a little
    cuda = Manifest(**{**manifest().__dict__, "params": {**FLOW_PARAMS, **NEW_PARAMS, "device": "cuda"}})
    assert cuda.run_id != manifest(**NEW_PARAMS).run_id


# The runs table as infoflow wrote it before schema 2 (no name, no tags); the other tables did not change.
SCHEMA_1_RUNS = """CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, model_id VARCHAR NOT NULL, model_revision VARCHAR NOT NULL,
    dataset VARCHAR NOT NULL, dataset_filter VARCHAR NOT NULL, params JSON NOT NULL, n_prompts INTEGER,
    package_version VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL,
    status VARCHAR NOT NULL, message VARCHAR, session VARCHAR
)"""


def schema_1_store(path: Path) -> str:
    """A store as infoflow wrote it before schema 2, with one complete info-flow run of 3 prompts (whose params
    hold no dtype or device); returns its run id."""
    old = manifest(engine="fast")  # the experiment's parameters, n_layers and engine, as the runner recorded them
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE TABLE {META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
        con.execute(f"INSERT INTO {META_TABLE} VALUES ('format', 'infoflow-results'), ('schema_version', '1')")
        con.execute(SCHEMA_1_RUNS)
        for table in (*row_tables().values(), COMPLETED):
            con.execute(table.ddl())
        con.execute(
            "INSERT INTO runs VALUES (?, 'info_flow', ?, ?, ?, ?, ?, 3, '0.1.0', now(), now(), 'complete', NULL, 'x')",
            [old.run_id, old.model_id, old.model_revision, old.dataset, old.dataset_filter, json.dumps(old.params)],
        )
        rows = pd.DataFrame(flow_rows(range(3)))  # noqa: F841 (read by the query below)
        con.execute(f"INSERT INTO info_flow SELECT '{old.run_id}', *, NULL FROM rows")
        con.execute(f"INSERT INTO completed SELECT '{old.run_id}', range, now() FROM range(3)")
    return old.run_id


def schema_version(path: Path) -> str:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'").fetchall()[0][0]


def test_a_store_of_schema_1_reads_as_is_and_is_upgraded_to_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.duckdb"
    old_id = schema_1_store(path)
    with ResultsStore.open(path, read_only=True) as store:
        run = store.run("builtin-mamba1 · info_flow · ws4")  # its derived name addresses it
        assert (run.run_id, run.status, run.tags) == (old_id, "complete", ())
        assert len(store.frame(old_id)) == 15 and store.completed_prompts(old_id) == {0, 1, 2}
    assert schema_version(path) == "1"  # reading changes nothing
    wide_consoles(monkeypatch)
    assert old_id[:8] in invoke("runs", "list", "--store", path).output
    assert "15 rows, 0 prompts with errors" in invoke("runs", "show", old_id[:6], "--store", path).output

    with ResultsStore.open(path) as store:  # opened to write: upgraded in place
        assert store.label_run(old_id, name="old sweep", tags=["v1"]).name == "old sweep"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            new = store.start_run(manifest(**NEW_PARAMS))  # the same command, now recording dtype and device
        (note,) = [w for w in caught if issubclass(w.category, StoreWarning)]
        assert f"run {old_id} of the same command" in str(note.message) and "not resumed" in str(note.message)
        assert new.run_id != old_id and store.completed_prompts(new.run_id) == set()
        assert len(store.frame("old sweep")) == 15
    assert schema_version(path) == "2"


def test_names_tags_and_addressing(tmp_path: Path) -> None:
    with ResultsStore.open(tmp_path / "s.duckdb") as store:
        first = store.start_run(manifest(**NEW_PARAMS))
        second = store.start_run(manifest(**NEW_PARAMS, strict=True))
        third = store.start_run(Manifest(**{**manifest(**NEW_PARAMS).__dict__, "dataset_filter": "all"}))
        assert first.name == "builtin-mamba1 · info_flow · ws4"
        assert second.name == "builtin-mamba1 · info_flow · ws4 · strict"
        assert third.name == "builtin-mamba1 · info_flow · ws4 (2)"  # derived names are made unique
        assert store.run(third.name).run_id == third.run_id and store.run(first.run_id[:5]).name == first.name

        named = store.start_run(manifest(**NEW_PARAMS, mode="zero-delta"), name="zero delta", tags=["a", "b"])
        with pytest.raises(StoreError, match=r"run name 'zero delta' is taken by run .*choose another name"):
            store.start_run(manifest(**NEW_PARAMS, mode="zero-everything"), name="zero delta")
        again = store.start_run(manifest(**NEW_PARAMS, mode="zero-delta"), name="zd", tags=["c"])  # resumed
        assert (again.run_id, again.name, again.tags) == (named.run_id, "zd", ("a", "b", "c"))
        relabelled = store.label_run("zd", name="zero-delta sweep", tags=["d"], untag=["a", "c"])
        assert (relabelled.name, relabelled.tags) == ("zero-delta sweep", ("b", "d"))
        with pytest.raises(UnknownRunError, match=r"matches no run .*did you mean"):
            store.run("zero-delta swep")
        runs = store.runs()
        assert list(runs["name"]) == [first.name, second.name, third.name, "zero-delta sweep"]
        assert list(runs["tags"].iloc[-1]) == ["b", "d"]


def test_a_run_label_names_the_run_of_its_kind_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ResultsStore.open(tmp_path / "s.duckdb") as store:
        context = SimpleNamespace(store=store, label=RunLabel("info_flow", "main sweep", ("paper",)))
        evaluation = start_run(context, manifest("evaluate", **NEW_PARAMS))  # the evaluation behind a filter
        sweep = start_run(context, manifest(**NEW_PARAMS))
        assert evaluation.name.startswith("builtin-mamba1 · evaluate") and evaluation.tags == ()
        assert (sweep.name, sweep.tags) == ("main sweep", ("paper",))
        assert capsys.readouterr().err == ""
        before = {**FLOW_PARAMS, "engine": "fast", "top": 1}  # a run made before dtype and device were recorded
        old = store.start_run(Manifest(**{**manifest().__dict__, "params": before}))
        start_run(SimpleNamespace(store=store, label=None), manifest(**NEW_PARAMS, top=1))  # the same command now
    (line,) = capsys.readouterr().err.strip().splitlines()  # the store's note, as one line
    assert line.startswith(f"note: run {old.run_id} of the same command") and "not resumed" in line


def test_runs_commands_in_json_and_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wide_consoles(monkeypatch)
    path = tmp_path / "s.duckdb"
    with ResultsStore.open(path) as store:
        run = store.start_run(manifest(**{**NEW_PARAMS, "dtype": "bfloat16"}), tags=["paper"])
        store.add_rows(run.run_id, flow_rows([0, 1]))
        store.add_errors(run.run_id, {7: "subject not in prompt"})
        store.finish_run(run.run_id)
    (listed,) = json.loads(invoke("runs", "list", "--store", path, "--json").output)
    assert (listed["run_id"], listed["name"], listed["tags"]) == (run.run_id, run.name, ["paper"])
    assert listed["params"]["dtype"] == "bfloat16" and (listed["n_done"], listed["n_errors"]) == (2, 1)
    shown = json.loads(invoke("runs", "show", run.name, "--store", path, "--json").output)
    assert (shown["n_rows"], shown["errors"]) == (10, [{"prompt_id": 7, "reason": "subject not in prompt"}])
    text = invoke("runs", "show", run.run_id[:4], "--store", path).output
    assert "Run(" not in text and "Manifest(" not in text  # a table, not a Python repr
    fields = {line.split()[0]: " ".join(line.split()[1:]) for line in text.splitlines() if line.strip()}
    assert (fields["name"], fields["tags"], fields["dtype"], fields["status"]) == (
        run.name,
        "paper",
        "bfloat16",
        "complete",
    )
    assert "renamed" in invoke("runs", "label", run.run_id, "--name", "renamed", "--store", path).output
    assert "matches no run" in invoke("runs", "show", run.name, "--store", path, code=1).output


class RecordingStore(DuckDBStore):
    opened: ClassVar[list[Path]] = []

    @classmethod
    def open_path(cls, path: Path, read_only: bool) -> DuckDBStore:
        cls.opened.append(path)
        return super().open_path(path, read_only)


def test_open_picks_the_backend_by_suffix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(base.BACKENDS, ".rec", f"{__name__}:RecordingStore")
    with ResultsStore.open(tmp_path / "a.rec") as store:
        assert isinstance(store, RecordingStore) and RecordingStore.opened == [tmp_path / "a.rec"]
    for name in ("b.duckdb", "c.db", "d"):  # DuckDB: by its suffix, and for any other
        with ResultsStore.open(tmp_path / name) as store:
            assert type(store) is DuckDBStore


def test_export_writers(tmp_path: Path) -> None:
    with ResultsStore.open(tmp_path / "s.duckdb") as store:
        attention = store.start_run(manifest("attention", layers=[0]), name="attn").run_id
        matrix = np.tril(np.arange(9, dtype=np.float32).reshape(3, 3) / 7)
        store.add_rows(attention, [{"prompt_id": 2, "layer": 0, "feature": "mean", "matrix": matrix, "tokens": ["a"]}])
        evaluate = store.start_run(manifest("evaluate")).run_id
        top = [{"token": " Paris", "p": 0.25}]
        store.add_rows(evaluate, [{"prompt_id": 1, "p0": float("nan"), "rank": 1, "correct": True, "top_tokens": top}])

        (line,) = store.export(attention, tmp_path / "a.jsonl").read_text().splitlines()
        assert np.array_equal(np.array(json.loads(line)["matrix"], dtype=np.float32), matrix)
        (record,) = [json.loads(x) for x in store.export(evaluate, tmp_path / "e.jsonl").read_text().splitlines()]
        assert record["top_tokens"] == top and record["p0"] is None and record["prompt"] is None
        back = pd.read_csv(store.export(attention, tmp_path / "a.csv"))
        assert np.array_equal(np.array(json.loads(back["matrix"].iloc[0]), dtype=np.float32), matrix)
        assert json.loads(back["tokens"].iloc[0]) == ["a"]
        metadata = pq.read_schema(store.export(attention, tmp_path / "a.parquet")).metadata[b"infoflow.run"]
        assert json.loads(metadata)["name"] == "attn"
        with pytest.raises(ValueError, match="export format must be one of parquet, csv, jsonl, not 'xlsx'"):
            store.export(attention, tmp_path / "a.xlsx")
