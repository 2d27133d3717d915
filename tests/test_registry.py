"""The experiment registry drives the store, the runner and the report: a new store has a row table per registered
experiment; an experiment registered later (one module and one entry) gets its table in an existing store,
runs, and has its section in the report; a store holding an experiment this infoflow does not know still reads."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from infoflow.data import load_dataset
from infoflow.data.prompts import FactPrompt
from infoflow.data.spans import TokenSpans, find_spans
from infoflow.engines.base import make_engine
from infoflow.experiments import registry
from infoflow.experiments.experiment import Block, Experiment, FigureOptions, TableBlock
from infoflow.experiments.runner import ChunkJob, ModelContext, Rows, RunContext, run_each, with_ids
from infoflow.models import load_model
from infoflow.models.load import LoadedModel
from infoflow.report import write_report
from infoflow.store import Manifest, ResultsStore, SchemaVersionError
from infoflow.store.schema import key, value


@dataclass(frozen=True)
class LengthParams:
    tail: int = 2  # the last tokens of a prompt that get a row


def length_job(params: LengthParams, context: ModelContext) -> ChunkJob:
    tokenizer = context.loaded.tokenizer

    def job(prompt: FactPrompt, spans: TokenSpans) -> Rows:
        last = spans.num_tokens - 1
        rows = [
            {"position": p, "token": tokenizer.decode([spans.input_ids[p]]), "n_tokens": spans.num_tokens}
            for p in range(max(0, last - params.tail + 1), last + 1)
        ]
        return with_ids(prompt, rows)

    return lambda chunk: run_each(chunk, job)


def length_report(frame: pd.DataFrame, options: FigureOptions) -> list[Block]:
    return [TableBlock(frame.groupby("position")["n_tokens"].size().rename("prompts").reset_index())]


# An experiment as a new module would declare it: its table, job, manifest parameters and report.
LENGTHS = Experiment(
    kind="prompt_tail",
    title="prompt tail",
    columns=(key("position", "INTEGER"), value("token", "VARCHAR"), value("n_tokens", "INTEGER", required=True)),
    job=length_job,
    manifest_params=lambda params: {"tail": params.tail},
    report=length_report,
)


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_model("builtin-gpt2")


@pytest.fixture(scope="module")
def prompts() -> list[FactPrompt]:
    return load_dataset("synthetic")[:3]


def table_names(path: Path) -> set[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def test_a_new_store_has_a_row_table_per_experiment(tmp_path: Path) -> None:
    path = tmp_path / "new.duckdb"
    ResultsStore.open(path).close()
    recall = {"sublayer_knockout", "causal_tracing", "vocab_projection"}
    assert set(registry.EXPERIMENTS) == {"evaluate", "info_flow", "heatmap", "attention", *recall}
    assert table_names(path) == {*registry.EXPERIMENTS, "errors", "completed", "in_flight", "runs", "infoflow_meta"}
    for kind, experiment in registry.EXPERIMENTS.items():
        assert experiment.table.name == kind
        keys = [c.key for c in experiment.columns]
        assert keys == sorted(keys, reverse=True), f"{kind}: key columns come first"
    with pytest.raises(ValueError, match="unknown experiment 'heat_map'; experiments: evaluate, info_flow"):
        registry.experiment("heat_map")


def test_an_experiment_registered_later_joins_an_existing_store(
    tmp_path: Path, loaded: LoadedModel, prompts: list[FactPrompt], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.duckdb"
    ResultsStore.open(path).close()  # made before the experiment existed
    monkeypatch.setitem(registry.EXPERIMENTS, LENGTHS.kind, LENGTHS)
    with ResultsStore.open(path, read_only=True) as store:  # read as it is: no table added, runs listed
        assert store.runs().empty
    assert LENGTHS.kind not in table_names(path)

    with ResultsStore.open(path) as store:  # opened to write: the new experiment's table is added
        context = RunContext(loaded, make_engine("fast", loaded.model), store, "synthetic", show_progress=False)
        run_id = LENGTHS.run(context, prompts, LengthParams(tail=2))
        assert LENGTHS.run(context, prompts, LengthParams(tail=2)) == run_id  # the same manifest resumes
        frame = store.frame(run_id)
        run = store.run(run_id)
    assert LENGTHS.kind in table_names(path)
    assert run.manifest.kind == "prompt_tail" and run.manifest.params["tail"] == 2
    expected = []
    for prompt in prompts:  # the rows, from the tokenizer directly
        ids = find_spans(loaded.tokenizer, prompt).input_ids
        expected += [
            (prompt.prompt_id, p, loaded.tokenizer.decode([ids[p]]), len(ids)) for p in (len(ids) - 2, len(ids) - 1)
        ]
    assert list(frame[["prompt_id", "position", "token", "n_tokens"]].itertuples(index=False, name=None)) == sorted(
        expected
    )

    with ResultsStore.open(path, read_only=True) as store:
        html = write_report(store, path=tmp_path / "report.html").read_text()
        (counted,) = store.runs()["n_rows"]
    assert counted == 2 * len(prompts)
    assert "<th>position</th>" in html and "<th>prompts</th>" in html  # the experiment's own report section

    monkeypatch.delitem(registry.EXPERIMENTS, LENGTHS.kind)  # an infoflow that does not know the experiment
    with ResultsStore.open(path, read_only=True) as store:
        assert store.runs()["kind"].tolist() == ["prompt_tail"]
        with pytest.raises(ValueError, match=r"no row table 'prompt_tail' in store .*; tables: "):
            store.frame(run_id)


def test_a_run_of_an_unknown_experiment_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with ResultsStore.open(tmp_path / "store.duckdb") as store:
        manifest = Manifest("info-flow", "model", "revision", "synthetic")
        with pytest.raises(ValueError, match="no row table 'info-flow'"):
            store.start_run(manifest)
        assert store.runs().empty


def test_a_column_an_experiment_gains_joins_an_existing_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "store.duckdb"
    monkeypatch.setitem(registry.EXPERIMENTS, LENGTHS.kind, LENGTHS)
    manifest = Manifest(LENGTHS.kind, "model", "revision", "synthetic")
    with ResultsStore.open(path) as store:
        run_id = store.start_run(manifest).run_id
        store.add_rows(run_id, [{"prompt_id": 0, "position": 3, "n_tokens": 4}])

    grown = replace(LENGTHS, columns=(*LENGTHS.columns, value("first_token", "VARCHAR")))
    monkeypatch.setitem(registry.EXPERIMENTS, LENGTHS.kind, grown)
    with ResultsStore.open(path) as store:  # opened to write: the column is added, null in the rows before
        store.add_rows(run_id, [{"prompt_id": 1, "position": 5, "n_tokens": 6, "first_token": "The"}])
        frame = store.frame(run_id)
    assert frame[["prompt_id", "position", "n_tokens"]].values.tolist() == [[0, 3, 4], [1, 5, 6]]
    assert frame["first_token"].isna().tolist() == [True, False] and frame["first_token"].iloc[1] == "The"

    rekeyed = replace(LENGTHS, columns=(key("layer", "INTEGER"), *LENGTHS.columns))
    monkeypatch.setitem(registry.EXPERIMENTS, LENGTHS.kind, rekeyed)
    with pytest.raises(SchemaVersionError, match="prompt_tail rows are keyed without layer, which this infoflow's"):
        ResultsStore.open(path, read_only=True)
