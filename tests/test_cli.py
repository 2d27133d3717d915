"""The command line end to end (typer's CliRunner, built-in GPT-2, a small CSV of synthetic facts, a tmp store):
stored rows checked against independent computations, resume after Ctrl-C, runs, report, plot, presets."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from rich.console import Console

from infoflow import cli
from infoflow.data import load_dataset
from infoflow.data.spans import find_spans
from infoflow.engines.fast import FastEngine
from infoflow.engines.reference import ReferenceEngine
from infoflow.experiments import evaluate, runner
from infoflow.experiments.filters import sample
from infoflow.interventions.knockout import Knockout
from infoflow.models import load_model
from infoflow.models.load import LoadedModel
from infoflow.plots.export import file_stem
from infoflow.store import ResultsStore
from infoflow.store.duckdb import DuckDBStore
from tests.cli_support import (
    FLOW_KEYS,
    MODEL,
    SYNTHETIC_IDS,
    assert_rows_match,
    invoke,
    wide_consoles,
    write_facts_csv,
)

FLOW = ["info-flow", "-m", MODEL, "-w", "4", "--source", "subject", "--source", "last", "-q"]  # 5 windows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_facts_csv(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def gpt2() -> LoadedModel:
    return load_model(MODEL)


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide consoles (no wrapped messages), presets and the default store in tmp."""
    wide_consoles(monkeypatch)
    monkeypatch.setenv("INFOFLOW_PRESETS", str(tmp_path / "presets.json"))
    monkeypatch.setenv("INFOFLOW_STORE", str(tmp_path / "default.duckdb"))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "results.duckdb"


def runs_of(store: Path) -> pd.DataFrame:
    with ResultsStore.open(store, read_only=True) as results:
        return results.runs()


def frame_of(store: Path, run_id: str, table: str | None = None) -> pd.DataFrame:
    with ResultsStore.open(store, read_only=True) as results:
        return results.frame(run_id, table)


def only_run(store: Path, kind: str) -> str:
    runs = runs_of(store)
    (run_id,) = runs.loc[runs["kind"] == kind, "run_id"]
    return str(run_id)


# --- experiments ---


def test_evaluate(dataset: Path, store: Path, gpt2: LoadedModel) -> None:
    result = invoke("evaluate", "-m", MODEL, "-d", dataset, "--store", store, "-n", 4, "--seed", 3, "-q")
    run_id = only_run(store, "evaluate")
    frame = frame_of(store, run_id).set_index("prompt_id")
    assert list(frame.index) == sample(range(len(SYNTHETIC_IDS)), 4, seed=3)
    prompts = load_dataset(str(dataset))
    for prompt_id, row in frame.iterrows():
        spans = find_spans(gpt2.tokenizer, prompts[int(prompt_id)])
        with torch.no_grad():
            probabilities = torch.softmax(gpt2.model(torch.tensor([spans.input_ids]))[0, -1].double(), -1)
        assert row["p0"] == pytest.approx(float(probabilities[spans.target_id]), abs=1e-6)
        assert row["rank"] == 1 + int((probabilities > probabilities[spans.target_id]).sum())
    assert f"top-1 accuracy {frame['correct'].mean():.1%} on 4 prompts" in result.output
    runs = runs_of(store)
    assert list(runs["dataset_filter"]) == ["all | sample 4 by hash (seed 3)"]
    assert list(runs["status"]) == ["complete"] and list(runs["n_done"]) == [4]
    assert run_id in result.output


def test_info_flow_rows_match_the_reference_engine(dataset: Path, store: Path, gpt2: LoadedModel) -> None:
    result = invoke(*FLOW, "-d", dataset, "--store", store, "--filter", "ids(1, 4)")
    run_id = only_run(store, "info_flow")
    assert f"infoflow report {run_id}" in result.output
    frame = frame_of(store, run_id)
    assert sorted(set(frame["prompt_id"])) == [1, 4]
    assert len(frame) == 2 * 2 * 5 and not frame.duplicated(FLOW_KEYS).any()
    assert set(frame["source"]) == {"subject", "last"} and set(frame["window_start"]) == set(range(5))
    prompt = load_dataset(str(dataset))[4]
    spans = find_spans(gpt2.tokenizer, prompt)
    rows = frame[(frame["prompt_id"] == 4) & (frame["window_start"].isin([0, 3]))]
    last = spans.num_tokens - 1
    sources = {"subject": list(spans.subject), "last": [last]}
    knockouts = [
        Knockout.between([last], sources[r.source], range(r.window_start, r.window_start + 4))
        for r in rows.itertuples()
    ]
    scores = ReferenceEngine(gpt2.model).scores(torch.tensor(spans.input_ids), spans.target_id, [None, *knockouts])
    p0, *p = scores.probability.double().tolist()
    assert rows["p"].to_numpy() == pytest.approx(p, abs=1e-5)
    assert rows["p0"].to_numpy() == pytest.approx([p0] * len(p), abs=1e-6)
    assert rows["diff"].to_numpy() == pytest.approx([(x - p0) / p0 * 100 for x in p], abs=1e-3)
    assert list(rows["hit"]) == scores.top1[1:].tolist()
    assert runs_of(store)["kind"].tolist() == ["info_flow"]  # ids() needs no evaluate run


def test_info_flow_default_filter_evaluates_first(dataset: Path, store: Path) -> None:
    invoke(*FLOW, "-d", dataset, "--store", store, "-n", 2)
    evaluated = frame_of(store, only_run(store, "evaluate"))
    assert len(evaluated) == len(SYNTHETIC_IDS)  # every prompt of the dataset, for the filter
    correct = set(evaluated.loc[evaluated["correct"], "prompt_id"])
    flow = frame_of(store, only_run(store, "info_flow"))
    assert set(flow["prompt_id"]) == set(sample(correct, 2, seed=0))
    assert runs_of(store).set_index("kind").loc["info_flow", "dataset_filter"] == "correct | sample 2 by hash (seed 0)"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--features", "fast_decay"], "feature category 'fast_decay' is supported by no layer"),
        (["--mode", "zero-delta"], "supported by no layer"),
        (["--strict"], "supported by no layer"),
        (["-w", "12"], "window size 12 is larger than the model's 8 layers"),
        (["--filter", "bogus"], "unknown filter 'bogus'"),
        (["--filter", "ids(1"], "expected ')'"),
        (["--filter", "ids(77)"], "selects no prompt"),
        (["--exempt-fraction", "2"], "exempt fraction must be in [0, 1]"),
    ],
)
def test_info_flow_errors_are_one_line(dataset: Path, store: Path, extra: list[str], message: str) -> None:
    result = invoke(*FLOW, "-d", dataset, "--store", store, "--filter", "ids(1)", *extra, code=1)
    assert message in result.output
    assert "Traceback" not in result.output
    assert not store.exists() or runs_of(store).empty  # refused before any work, evaluate included


def test_unknown_model_and_dataset(tmp_path: Path, store: Path, dataset: Path) -> None:
    assert (
        "no dataset file"
        in invoke("evaluate", "-m", MODEL, "-d", tmp_path / "none.csv", "--store", store, code=1).output
    )
    result = invoke("evaluate", "-m", "no-such-model-xyz", "-d", dataset, "--store", store, code=1)
    assert "no-such-model-xyz" in result.output and "Traceback" not in result.output


def test_heatmap(dataset: Path, store: Path, gpt2: LoadedModel) -> None:
    invoke("heatmap", "-m", MODEL, "-d", dataset, "--store", store, "--filter", "ids(2, 3)", "-w", 6, "-q")
    frame = frame_of(store, only_run(store, "heatmap"))
    prompts = load_dataset(str(dataset))
    for prompt_id in (2, 3):
        spans = find_spans(gpt2.tokenizer, prompts[prompt_id])
        rows = frame[frame["prompt_id"] == prompt_id]
        grid = rows.pivot(index="position", columns="window_start", values="p")
        assert grid.shape == (spans.num_tokens, 3) and not grid.isna().any().any()  # positions x windows
    spans = find_spans(gpt2.tokenizer, prompts[3])
    last = spans.num_tokens - 1
    knockouts = [None, Knockout.between([last], [1], range(2, 8)), Knockout.between([last], [last], range(0, 6))]
    p0, p_1_2, p_last_0 = (
        ReferenceEngine(gpt2.model)
        .scores(torch.tensor(spans.input_ids), spans.target_id, knockouts)
        .probability.tolist()
    )
    rows = frame[frame["prompt_id"] == 3].set_index(["position", "window_start"])
    assert rows.loc[(1, 2), "p"] == pytest.approx(p_1_2, abs=1e-5)
    assert rows.loc[(last, 0), "p"] == pytest.approx(p_last_0, abs=1e-5)
    assert rows["p0"].to_numpy() == pytest.approx(np.full(len(rows), p0), abs=1e-6)


def test_attention(dataset: Path, store: Path, gpt2: LoadedModel) -> None:
    args = ["attention", "-m", MODEL, "-d", dataset, "--store", store, "--filter", "ids(5)", "-q"]
    invoke(*args, "--layer", 0, "--layer", 7)
    frame = frame_of(store, only_run(store, "attention"))
    assert sorted(frame["layer"]) == [0, 7] and set(frame["feature"]) == {"mean"}
    spans = find_spans(gpt2.tokenizer, load_dataset(str(dataset))[5])
    with torch.no_grad():
        expected = gpt2.model.hidden_attention(torch.tensor([spans.input_ids]), 7)[0].mean(0).numpy()
    matrix = np.array([np.asarray(r) for r in frame.set_index("layer").loc[7, "matrix"]])
    assert matrix == pytest.approx(expected, abs=1e-5)
    assert "do not exist" in invoke(*args, "--layer", 9, code=1).output


# --- resume after Ctrl-C ---


def test_batch_size_changes_speed_not_rows(dataset: Path, tmp_path: Path) -> None:
    """--batch-size auto (the default), 3 rows per tail pass, and a bad value: same rows, or a clear error."""
    args = [*FLOW, "-d", dataset, "--filter", "ids(0, 1, 2)"]
    invoke(*args, "--store", tmp_path / "auto.duckdb", "--batch-size", "auto")
    invoke(*args, "--store", tmp_path / "small.duckdb", "--batch-size", "3")
    auto, small = (frame_of(tmp_path / f"{name}.duckdb", only_run(tmp_path / f"{name}.duckdb", "info_flow"))
                   for name in ("auto", "small"))  # fmt: skip
    assert len(auto) == 3 * 2 * 5
    assert_rows_match(small.sort_values(FLOW_KEYS, ignore_index=True), auto.sort_values(FLOW_KEYS, ignore_index=True))
    error = " ".join(invoke(*args, "--batch-size", "many", code=2).output.replace("│", " ").split())
    assert "Invalid value for '--batch-size': expected a positive number of rows or 'auto'" in error


def test_resume_after_ctrl_c(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = [*FLOW, "-d", dataset, "--filter", "ids(0, 1, 2, 3, 5)"]
    invoke(*args, "--store", tmp_path / "straight.duckdb")  # uninterrupted, default chunks
    expected = frame_of(tmp_path / "straight.duckdb", only_run(tmp_path / "straight.duckdb", "info_flow"))

    original_run_prompts = runner.run_prompts
    monkeypatch.setattr(  # one prompt per chunk, so that Ctrl-C can fall between prompts
        runner, "run_prompts", lambda *a, **k: original_run_prompts(*a, **{**k, "chunk_size": 1})
    )
    calls = {"n": 0}
    original_scores = FastEngine.scores_many

    def interrupted(self: FastEngine, requests: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original_scores(self, requests)

    monkeypatch.setattr(FastEngine, "scores_many", interrupted)
    store = tmp_path / "resumed.duckdb"
    assert "interrupted" in invoke(*args, "--store", store, code=130).output
    with ResultsStore.open(store) as results:  # the store opens, writable
        (run,) = results.runs().itertuples()
        assert (run.status, run.n_done, run.n_errors) == ("partial", 2, 0)
        completed = results.completed_prompts(run.run_id)  # the two shortest prompts: they run first
        assert len(completed) == 2 and completed < {0, 1, 2, 3, 5}
        partial = results.frame(run.run_id)
    assert set(partial["prompt_id"]) == completed and len(partial) == 2 * 2 * 5
    assert "partial" in invoke("runs", "list", "--store", store).output

    monkeypatch.setattr(FastEngine, "scores_many", original_scores)
    invoke(*args, "--store", store)
    (run,) = runs_of(store).itertuples()
    assert (run.status, run.n_done) == ("complete", 5)
    final = frame_of(store, run.run_id)
    assert not final.duplicated(FLOW_KEYS).any()
    assert final[FLOW_KEYS].equals(expected[FLOW_KEYS])
    assert_rows_match(final, expected)  # chunks of one prompt batch other rows together: fp32 noise
    assert final["hit"].equals(expected["hit"])
    assert partial.set_index(FLOW_KEYS)["p"].equals(
        final.set_index(FLOW_KEYS).loc[partial.set_index(FLOW_KEYS).index, "p"]
    )

    def never(self: FastEngine, requests: Any) -> Any:
        raise AssertionError("a finished run computes nothing again")

    monkeypatch.setattr(FastEngine, "scores_many", never)
    invoke(*args, "--store", store)  # re-running the finished run adds nothing
    assert frame_of(store, run.run_id).equals(final)
    assert runs_of(store)[["run_id", "status", "n_done"]].values.tolist() == [[run.run_id, "complete", 5]]


def test_ctrl_c_inside_a_write_keeps_the_store_consistent(
    dataset: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C inside the transaction that stores a chunk: that chunk is rolled back whole, the rest resumes."""
    args = [*FLOW, "-d", dataset, "--filter", "ids(0, 1, 2)", "--store", store]
    original_run_prompts = runner.run_prompts
    monkeypatch.setattr(runner, "run_prompts", lambda *a, **k: original_run_prompts(*a, **{**k, "chunk_size": 1}))
    calls = {"n": 0}
    original_touch = DuckDBStore._touch

    def touch(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
        original_touch(con, run_id)
        calls["n"] += 1
        if calls["n"] == 2:  # the second chunk's rows and completion mark are written, not yet committed
            raise KeyboardInterrupt

    monkeypatch.setattr(DuckDBStore, "_touch", staticmethod(touch))
    invoke(*args, code=130)
    (run,) = runs_of(store).itertuples()
    assert (run.status, run.n_done) == ("partial", 1)
    assert set(frame_of(store, run.run_id)["prompt_id"]) == {0}  # no rows of the rolled-back prompt
    monkeypatch.setattr(DuckDBStore, "_touch", staticmethod(original_touch))
    invoke(*args)
    final = frame_of(store, run.run_id)
    assert len(final) == 3 * 2 * 5 and not final.duplicated(FLOW_KEYS).any()
    assert runs_of(store)[["status", "n_done"]].values.tolist() == [["complete", 3]]


def test_ctrl_c_while_evaluating_for_the_filter(dataset: Path, store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default filter 'correct' evaluates the model first; Ctrl-C there leaves that run partial."""
    original = evaluate.clean_probabilities

    def interrupted(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "clean_probabilities", interrupted)
    invoke(*FLOW, "-d", dataset, "--store", store, "-n", 2, code=130)
    runs = runs_of(store)
    assert runs[["kind", "status", "n_done"]].values.tolist() == [["evaluate", "partial", 0]]
    monkeypatch.setattr(evaluate, "clean_probabilities", original)
    invoke(*FLOW, "-d", dataset, "--store", store, "-n", 2)
    runs = runs_of(store).set_index("kind")
    assert runs.loc["evaluate", "status"] == "complete" and runs.loc["evaluate", "n_done"] == len(SYNTHETIC_IDS)
    assert runs.loc["info_flow", "status"] == "complete" and runs.loc["info_flow", "n_done"] == 2


# --- runs, report, plot ---


@pytest.fixture(scope="module")
def filled_store(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A store with an evaluate, an info-flow and a heatmap run (built once; tests work on copies)."""
    path = tmp_path_factory.mktemp("filled") / "results.duckdb"
    base = ["-m", MODEL, "-d", dataset, "--store", path, "-q"]
    invoke("evaluate", *base, "--filter", "ids(0, 1, 2)")
    invoke(*FLOW[:1], *base, *FLOW[3:], "--filter", "ids(0, 1, 2)")
    invoke("heatmap", *base, "--filter", "ids(1, 2)", "-w", 6)
    runs = runs_of(path).set_index("kind")["run_id"]
    return path, {kind: str(runs[kind]) for kind in ("evaluate", "info_flow", "heatmap")}


@pytest.fixture
def filled(filled_store: tuple[Path, dict[str, str]], store: Path) -> dict[str, str]:
    shutil.copyfile(filled_store[0], store)
    return filled_store[1]


def test_runs_list_show_export_delete(filled: dict[str, str], store: Path, tmp_path: Path) -> None:
    listing = invoke("runs", "list", "--store", store).output
    for run_id in filled.values():
        assert re.search(rf"{run_id[:8]} .*complete", listing)  # a short id: any unique prefix addresses a run
    shown = invoke("runs", "show", filled["info_flow"][:6], "--store", store).output  # a unique prefix will do
    assert filled["info_flow"] in shown and "30 rows, 0 prompts with errors" in shown and MODEL in shown
    for suffix in ("parquet", "csv"):
        path = tmp_path / f"flow.{suffix}"
        assert str(path) in invoke("runs", "export", filled["info_flow"], path, "--store", store).output
        exported = pd.read_parquet(path) if suffix == "parquet" else pd.read_csv(path)
        stored = frame_of(store, filled["info_flow"])
        assert exported[FLOW_KEYS[1:]].astype(str).equals(stored[FLOW_KEYS[1:]].astype(str))
        assert exported["p"].to_numpy() == pytest.approx(stored["p"].to_numpy(), rel=1e-12)
    assert b"infoflow.run" in pq.read_metadata(tmp_path / "flow.parquet").metadata
    errors = tmp_path / "errors.csv"
    invoke("runs", "export", filled["info_flow"], errors, "--table", "errors", "--store", store)
    assert pd.read_csv(errors).empty

    assert "matches no run" in invoke("runs", "show", "ffffffffffff", "--store", store, code=1).output
    invoke("runs", "delete", filled["heatmap"], "--store", store, stdin="n\n", code=1)  # declined
    assert filled["heatmap"] in runs_of(store)["run_id"].tolist()
    assert f"deleted {filled['heatmap']}" in invoke("runs", "delete", filled["heatmap"], "--store", store, "-y").output
    assert sorted(runs_of(store)["run_id"]) == sorted([filled["evaluate"], filled["info_flow"]])
    assert filled["heatmap"] not in invoke("runs", "list", "--store", store).output
    assert "matches no run" in invoke("runs", "delete", filled["heatmap"], "--store", store, "-y", code=1).output
    assert "no results store" in invoke("runs", "list", "--store", tmp_path / "none.duckdb", code=1).output


def test_runs_list_keeps_run_ids_whole_in_a_narrow_console(
    filled: dict[str, str], store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "out", Console(width=80))  # a pipe, or a small terminal
    listing = invoke("runs", "list", "--store", store).output
    assert all(run_id[:8] in listing for run_id in filled.values())
    assert max(len(line) for line in listing.splitlines()) <= 80
    words = " ".join(listing.split())
    assert "ids(3 prompts)" in words and "ids(0, 1, 2)" not in words  # a long filter is shortened


def test_runs_show_lists_prompt_errors(tmp_path: Path, store: Path) -> None:
    broken = tmp_path / "broken.csv"
    pd.DataFrame(
        [
            {
                "prompt": "Thargol Tesbrammon Silwen was born in",
                "subject": "Thargol Tesbrammon Silwen",
                "target": " Tornhal",
            },
            {"prompt": "Nobody was born in", "subject": "Somebody", "target": " Tornhal"},
        ]
    ).to_csv(broken, index=False)
    invoke(*FLOW, "-d", broken, "--store", store, "--filter", "all")
    (run,) = runs_of(store).itertuples()
    assert (run.status, run.n_done, run.n_errors) == ("complete", 1, 1)
    shown = invoke("runs", "show", run.run_id, "--store", store).output
    assert "10 rows, 1 prompts with errors" in shown
    assert re.search(r"prompt 1: .*Somebody", shown)


def png_images(html: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_report(filled: dict[str, str], store: Path, tmp_path: Path) -> None:
    path = tmp_path / "out" / "report.html"
    assert str(path.resolve()) in invoke("report", "--store", store, "-o", path).output
    html = path.read_text(encoding="utf-8")
    images = png_images(html)
    # info flow: diff and hit curves; heatmaps: one per prompt (2)
    assert len(images) == 4
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    for run_id in filled.values():
        assert f'id="run-{run_id}"' in html
    assert "http://" not in html and "https://" not in html  # self-contained
    only = tmp_path / "heatmap.html"
    invoke("report", filled["heatmap"], "--store", store, "-o", only, "--heatmap-prompts", 1)
    html = only.read_text(encoding="utf-8")
    assert len(png_images(html)) == 1 and filled["info_flow"] not in html
    assert "matches no run" in invoke("report", "0123456789abcdef", "--store", store, "-o", only, code=1).output


def test_plot(filled: dict[str, str], store: Path, tmp_path: Path) -> None:
    folder = tmp_path / "figures"
    names = runs_of(store).set_index("run_id")["name"]
    flow_stem, heat_stem = (file_stem(names[filled[k]]) for k in ("info_flow", "heatmap"))
    output = invoke("plot", filled["info_flow"], "--store", store, "-o", folder, "--metric", "hit").output
    flow = [folder / f"{flow_stem}-hit.{suffix}" for suffix in ("png", "pdf", "txt")]
    heat = [folder / f"{heat_stem}-prompt{p}.{s}" for p in (1, 2) for s in ("png", "pdf", "txt")]
    invoke("plot", filled["heatmap"], "--store", store, "-o", folder)
    assert sorted(folder.iterdir()) == sorted(flow + heat)
    for path in flow + heat:
        magic = {".png": b"\x89PNG", ".pdf": b"%PDF", ".txt": b""}[path.suffix]
        assert path.read_bytes().startswith(magic) and path.stat().st_size > 100
    assert filled["info_flow"] in flow[2].read_text() and "bootstrap" in flow[2].read_text()  # the caption file
    assert all(str(path) in output for path in flow)
    mixed = invoke("plot", filled["info_flow"], filled["heatmap"], "--store", store, "-o", folder, code=1).output
    assert "one kind" in mixed
    assert "one kind" in invoke("plot", filled["evaluate"], "--store", store, "-o", folder, code=1).output


def test_plot_title_formats_dpi_and_column_width(filled: dict[str, str], store: Path, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "paper"
    args = ["plot", filled["info_flow"], "--store", store, "-o", folder, "--title", "Subject to last"]
    invoke(*args, "--format", "svg", "--format", "png", "--dpi", "100", "--width", "single")
    stem = folder / f"{file_stem(runs_of(store).set_index('run_id')['name'][filled['info_flow']])}-diff"
    svg = stem.with_name(stem.name + ".svg").read_text()
    assert "Subject to last" in svg and "<path" in svg  # text stays text (svg.fonttype none)
    width, _ = Image.open(stem.with_name(stem.name + ".png")).size
    assert width == pytest.approx(3.5 * 100, abs=2)  # a single column at 100 dpi
    assert not stem.with_name(stem.name + ".pdf").exists()
    assert "svg" in invoke(*args, "--format", "eps", code=2).output
    assert "single" in invoke(*args, "--width", "triple", code=2).output


# --- presets ---


def test_presets(dataset: Path, store: Path, tmp_path: Path) -> None:
    assert invoke("presets").output.strip() == ""
    saved = invoke("presets", "two", "ids(2, 5)").output
    assert "saved preset 'two'" in saved and str(tmp_path / "presets.json") in saved
    invoke("presets", "wider", "preset(two) or ids(0)")
    assert invoke("presets").output.splitlines() == ["two: ids(2, 5)", "wider: preset(two) or ids(0)"]
    assert "expected ')'" in invoke("presets", "bad", "ids(1", code=1).output
    assert "preset names" in invoke("presets", "bad name", "ids(1)", code=1).output
    assert "give the preset's filter expression" in invoke("presets", "lonely", code=1).output
    assert "bad" not in invoke("presets").output
    invoke(*FLOW, "-d", dataset, "--store", store, "--filter", "preset(wider) and not ids(5)")
    flow = frame_of(store, only_run(store, "info_flow"))
    assert sorted(set(flow["prompt_id"])) == [0, 2]
    assert runs_of(store)["dataset_filter"].tolist() == ["preset(wider) and not ids(5)"]


def test_default_store_from_environment(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    invoke("evaluate", "-m", MODEL, "-d", dataset, "--filter", "ids(0)", "-q")
    assert (tmp_path / "default.duckdb").exists()
    assert len(runs_of(tmp_path / "default.duckdb")) == 1


def test_help_lists_the_commands() -> None:
    output = invoke("--help").output
    for command in ("evaluate", "info-flow", "heatmap", "attention", "runs", "report", "plot", "presets", "demo"):
        assert command in output


def test_readme_shows_every_command() -> None:
    """The README's command-line block names every command of ``infoflow --help``."""
    import typer.main

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Command line")[1].split("```")[1]
    commands = typer.main.get_command(cli.app).commands
    assert {"info-flow", "causal-tracing", "runs"} <= set(commands)
    missing = [name for name in commands if not re.search(rf"^infoflow {re.escape(name)}\b", block, re.M)]
    assert not missing, f"commands not in the README: {missing}"


def test_command_line_starts_without_torch() -> None:
    """`infoflow --help` and argument errors answer at once: importing the CLI loads neither torch nor
    transformers (each command imports what it runs)."""
    code = "import sys, infoflow.cli; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


@pytest.mark.parametrize("width", [80, 160])
def test_models_lists_every_alias_whole_at_any_width(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from infoflow.models.registry import list_models

    monkeypatch.setattr(cli, "out", Console(width=width))
    output = invoke("models").output
    aliases = [entry.alias for entry in list_models()]
    assert all(f" {alias} " in output for alias in aliases) and "…" not in output
    assert ("descriptions: a terminal of 120 columns" in output) == (width < 120)
    records = json.loads(invoke("models", "--json").output)
    assert [record["alias"] for record in records] == aliases
