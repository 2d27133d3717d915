"""The web app's logic modules without Streamlit: runs, compare, heatmaps, explorer, features, launch, CLI."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from infoflow.app import compare, features, heatmaps, hidden, prompts, runs
from infoflow.app.errors import AppError, user_message
from infoflow.app.explorer import ExplorerRequest, explore, find_subject
from infoflow.app.launch import LaunchRequest, launch
from infoflow.app.launcher import ENTRY_SCRIPT, streamlit_command
from infoflow.app.store_access import open_store
from infoflow.cli import app as cli
from infoflow.models import ModelLoadError, load_model
from infoflow.plots import aggregate
from infoflow.plots.facts import Fact
from infoflow.store import ResultsStore
from tests.app_fixtures import WINDOW, build_store, one_thread


@pytest.fixture(scope="module")
def store_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("app_logic") / "results.duckdb"
    return path, build_store(path, n_prompts=2)


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


def test_runs_table_and_export(store_runs: tuple[Path, dict[str, str]]) -> None:
    path, ids = store_runs
    with open_store(path) as store:
        table = runs.runs_table(store)
        assert list(table.columns) == runs.COLUMNS
        row = table.set_index("run_id").loc[ids["info_flow_gpt2"]]
        assert row["status"] == "complete (1 errors)" and row["rows"] == 2 * 4 * 5
        csv = pd.read_csv(io.BytesIO(runs.export_bytes(store, ids["heatmap_gpt2"], "csv")))
        parquet = pq.read_table(io.BytesIO(runs.export_bytes(store, ids["heatmap_gpt2"], "parquet")))
        assert len(csv) == parquet.num_rows == len(store.frame(ids["heatmap_gpt2"]))
        assert b"infoflow.run" in parquet.schema.metadata
        with pytest.raises(ValueError, match="export format"):
            runs.export_bytes(store, ids["heatmap_gpt2"], "xlsx")
        assert runs.manifest_details(store, ids["heatmap_gpt2"])["params"]["window_size"] == WINDOW


def test_missing_store_message(tmp_path: Path) -> None:
    with pytest.raises(AppError, match="No results store at"), open_store(tmp_path / "none.duckdb"):
        pass


def test_compare_bands_are_the_student_t_aggregate(store_runs: tuple[Path, dict[str, str]]) -> None:
    path, ids = store_runs
    with open_store(path) as store:
        frame = compare.load_rows(store, [ids["info_flow_mamba1"], ids["info_flow_gpt2"]])
        rows = compare.apply_selection(store, frame, compare.Selection(feature_categories=("all",)))
        assert compare.varying_columns(rows) == ["model"]
        points = compare.curve_points(rows, "diff", "window")
        expected = aggregate(rows, ["model", "source"], "diff")
        merged = points.merge(expected, left_on=["line", "source", "x"], right_on=["model", "source", "window_start"])
        assert len(merged) == len(points) == 2 * 4 * 5
        np.testing.assert_allclose(merged["low_x"], merged["low_y"])
        np.testing.assert_allclose(merged["high_x"], merged["high_y"])
        depth = compare.curve_points(rows, "hit", "depth")
        assert depth["x"].min() == 0 and depth["x"].max() == 100
        assert compare.png_figure(rows, "diff", "depth").startswith(b"\x89PNG")
        only_one = compare.apply_selection(store, frame, compare.Selection(prompt_filter="ids(1)"))
        assert set(only_one["prompt_id"]) == {1}
        with pytest.raises(ValueError, match="no rows with source"):
            compare.apply_selection(store, frame, compare.Selection(sources=("context",)))


def test_heatmap_panels_side_by_side(store_runs: tuple[Path, dict[str, str]]) -> None:
    path, ids = store_runs
    with open_store(path) as store:
        frame = heatmaps.load_rows(store, [ids["heatmap_mamba1"], ids["heatmap_gpt2"]])
    assert list(heatmaps.prompt_choices(frame)) == [0]
    assert heatmaps.prompt_choices(frame)[0].startswith("Thargol")  # special tokens left out
    panels = heatmaps.panels(frame, 0, WINDOW)
    assert [p.title for p in panels] == ["builtin-mamba1", "builtin-gpt2"]
    assert all(p.values.shape == (len(p.tokens), 8 - WINDOW + 1) for p in panels)
    # the subject's rows and the target, from the synthetic dataset (the runs have no evaluate rows)
    assert all(p.subject == (1, 2, 3, 4, 5, 6) and p.target == " Tornhal" for p in panels)


@pytest.mark.parametrize("kind", ["info_flow", "heatmap"])
def test_prompt_table_and_top_k_after_a_knockout(store_runs: tuple[Path, dict[str, str]], kind: str) -> None:
    """The prompt table's effect is each prompt's strongest drop; the live top-k after one of the run's
    knockouts gives the target the probability the run stored for it (reference engine vs the fast engine)."""
    path, ids = store_runs
    run_id = ids[f"{kind}_mamba1"]
    with open_store(path) as store:
        table = prompts.prompt_table(store, run_id)
        rows = store.frame(run_id)
        params = dict(store.run(run_id).manifest.params)
    assert sorted(table["prompt_id"]) == sorted(rows["prompt_id"].unique())
    assert table["effect (%)"].is_monotonic_increasing and table["prompt"].str.len().min() > 10
    loaded = load_model("builtin-mamba1")
    first = table.iloc[0]
    fact = Fact(first["prompt"], first["subject"], first["target"])
    mine = rows[rows["prompt_id"] == first["prompt_id"]]
    if kind == "info_flow":
        expected = (mine["diff"].min(), mine.loc[mine["diff"].idxmin()])
        row = expected[1]
        edges = {"source": row["source"], "feature_category": row["feature_category"]}
        assert first["effect (%)"] == pytest.approx(expected[0])
    else:
        row = mine.loc[mine["p"].idxmin()]
        edges = {"position": int(row["position"])}
        assert first["effect (%)"] == pytest.approx((row["p"] - row["p0"]) / row["p0"] * 100)
    window = (int(row["window_size"]), int(row["window_start"]))
    choice = prompts.KnockoutChoice(*window, **edges, options=prompts.run_options(params))
    result = prompts.knockout_top_k(loaded, fact, choice, k=5)
    assert result.p == pytest.approx(row["p"], rel=1e-4, abs=1e-6) and result.p0 == pytest.approx(row["p0"], rel=1e-5)
    assert len(result.table) == 5 and result.table["p"].is_monotonic_decreasing
    np.testing.assert_allclose(result.table["change"], result.table["p"] - result.table["p clean"], atol=1e-7)


def test_find_subject() -> None:
    assert find_subject("Thargol Tesbrammon Silwen was born in", known=["Silwen", "Thargol Tesbrammon Silwen"]) == (
        "Thargol Tesbrammon Silwen"
    )
    assert find_subject("The Eiffel Tower is in", known=[]) == "The Eiffel Tower"
    with pytest.raises(AppError, match="subject not found"):
        find_subject("where is it", known=[])


def test_explore_rows_match_the_plans() -> None:
    loaded = load_model("builtin-gpt2")
    steps: list[float] = []
    result = explore(loaded, ExplorerRequest("Thargol Tesbrammon Silwen was born in"), lambda f, _: steps.append(f))
    n_windows = loaded.model.n_layers - WINDOW + 1
    assert len(result.heatmap_rows) == len(result.tokens) * n_windows
    assert len(result.curve_rows) == 4 * n_windows
    assert result.subject_found and result.target_from_model and result.top_k["target"].iloc[0]
    assert steps == sorted(steps) and steps[-1] == 1.0
    assert result.p0 == pytest.approx(result.top_k["p"].iloc[0], abs=1e-5)


def test_features_decay_split() -> None:
    table = features.decay_table(load_model("builtin-mamba2"))
    per_layer = table[table["layer"] == 0]["category"].value_counts()
    assert per_layer[features.FASTEST] == per_layer[features.SLOWEST] == 10 // 3
    fastest = table[(table["layer"] == 0) & (table["category"] == features.FASTEST)]["decay_norm"].max()
    slowest = table[(table["layer"] == 0) & (table["category"] == features.SLOWEST)]["decay_norm"].min()
    assert fastest < slowest
    with pytest.raises(AppError, match="has no layer whose features decay"):
        features.decay_table(load_model("builtin-llama"))


def test_launch_resumes_in_steps(tmp_path: Path) -> None:
    loaded = load_model("builtin-llama")
    progress: list[tuple[int, int]] = []
    request = LaunchRequest(kind="info_flow", limit=3, step=2, window_size=WINDOW)
    with ResultsStore.open(tmp_path / "r.duckdb") as store:
        run_id = launch(loaded, store, request, lambda d, t: progress.append((d, t)))
        run = store.run(run_id)
        assert run.status.value == "complete" and run.manifest.n_prompts == 3
        assert len(store.frame(run_id)) == 3 * 4 * 5
        assert launch(loaded, store, request) == run_id  # the same request resumes the same run
    assert progress == [(0, 3), (2, 3), (3, 3)]


def test_user_messages() -> None:
    assert user_message(ModelLoadError("no such file")) == "Model load failure: no such file"
    assert user_message(RuntimeError("boom")) is None


def test_cli_app_runs_streamlit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command, env: calls.append((command, env)) or 0)
    result = CliRunner().invoke(cli, ["app", "--store", str(tmp_path / "s.duckdb"), "--port", "8600"])
    assert result.exit_code == 0, result.output
    command, env = calls[0]
    assert command[1:5] == ["-m", "streamlit", "run", str(ENTRY_SCRIPT)] and "8600" in command
    assert env["INFOFLOW_STORE"] == str((tmp_path / "s.duckdb").resolve())
    assert ENTRY_SCRIPT.exists()
    assert streamlit_command(None, 1, "0.0.0.0")[0][command.index("--server.address") + 1] == "0.0.0.0"


def test_hidden_attention_category_means() -> None:
    loaded = load_model("builtin-mamba2")
    rows = hidden.compute(loaded, "Thargol Tesbrammon Silwen was born in", per_feature=True, layers=[1])
    assert hidden.layers(rows) == [1] and hidden.features(rows)[:2] == ["mean", "0"]
    table = features.decay_table(loaded)
    part = table[table["layer"] == 1]
    categories = dict(zip(part["feature"], part["category"], strict=True))
    merged = hidden.with_category_means(rows, categories)
    heads = [h for h, c in categories.items() if c == features.SLOWEST]
    expected = np.mean([hidden.matrix(rows, 1, str(h))[0] for h in heads], axis=0)
    np.testing.assert_allclose(hidden.matrix(merged, 1, features.SLOWEST)[0], expected, rtol=1e-6, atol=1e-9)
    mean, tokens = hidden.matrix(rows, 1, "mean")
    assert mean.shape == (len(tokens), len(tokens)) and np.allclose(np.triu(mean, 1), 0)  # causal
