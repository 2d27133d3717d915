"""Run specs: `infoflow run SPEC` runs what a TOML file describes; `infoflow runs export-spec RUN` writes the
spec of a stored run, and running it into a fresh store reproduces the run (same id, same rows)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd
import pytest

from infoflow.experiments.filters import describe_candidates, describe_selection
from infoflow.spec import SpecError, parse_selection, parse_spec, to_toml
from infoflow.store import ResultsStore
from tests.cli_support import MODEL, invoke, wide_consoles


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wide_consoles(monkeypatch)
    monkeypatch.setenv("INFOFLOW_STORE", str(tmp_path / "default.duckdb"))


def runs_and_rows(store: Path) -> dict[str, tuple[pd.Series, pd.DataFrame]]:
    with ResultsStore.open(store, read_only=True) as results:
        runs = results.runs().set_index("run_id")
        return {r: (runs.loc[r], results.frame(r).sort_values(list(results.frame(r).columns[:6]))) for r in runs.index}


@pytest.mark.parametrize(
    ("expression", "limit", "seed", "candidates"),
    [("all", None, 0, None), ("correct and not ids(3, 4)", 20, 7, None), ("top(3)", 5, 0, 300), ("all", None, 2, 40)],
)
def test_selection_is_read_back_as_it_was_described(
    expression: str, limit: int | None, seed: int, candidates: int | None
) -> None:
    recorded = describe_selection(expression, limit, seed)
    if candidates is not None:
        recorded = describe_candidates(recorded, candidates, seed)
    expected = {"filter": expression} | ({"limit": limit, "seed": seed} if limit is not None else {})
    expected |= {"candidates": candidates} if candidates is not None else {}
    assert parse_selection(recorded) == expected
    assert parse_selection(recorded + "; only 3 of 40 pass") == expected  # a shortfall: the run repeats it


def test_exported_spec_reproduces_the_runs(tmp_path: Path) -> None:
    first, fresh = tmp_path / "first.duckdb", tmp_path / "fresh.duckdb"
    base = ["-d", "synthetic", "-n", "2", "--store", first, "-q"]
    options = ["-w", "4", "--source", "subject", "--strict", "--features", "slow_decay", "--exempt-fraction", "0.25"]
    invoke("info-flow", "-m", "builtin-mamba1", *base, "--filter", "correct", *options)
    invoke("heatmap", "-m", MODEL, *base, "--filter", "all", "-w", "3", "--dtype", "bfloat16")
    target = next(r for r, (run, _) in runs_and_rows(first).items() if run["kind"] == "heatmap")
    invoke("runs", "label", target, "--name", "gpt2 heatmaps", "--tag", "paper", "--store", first)
    before = runs_and_rows(first)
    for run_id, (run, rows) in before.items():
        if run["kind"] == "evaluate":  # the evaluation behind the filter: the info-flow run's spec redoes it
            continue
        spec = tmp_path / f"{run_id}.toml"
        invoke("runs", "export-spec", run_id[:8], "-o", spec, "--store", first)
        table = tomllib.loads(spec.read_text())
        invoke("run", spec, "--store", fresh, "-q")
        after = runs_and_rows(fresh)
        assert run_id in after, table  # the same manifest: the same run id
        again, again_rows = after[run_id]
        assert (again["name"], again["status"], again["n_done"]) == (run["name"], run["status"], run["n_done"])
        pd.testing.assert_frame_equal(again_rows.reset_index(drop=True), rows.reset_index(drop=True))
    heat = tomllib.loads((tmp_path / f"{target}.toml").read_text())
    assert heat["dtype"] == "bfloat16" and heat["experiment"] == [
        {"kind": "heatmap", "window_size": 3, "mode": "zero-attention", "strict": False, "exempt_fraction": 1 / 3,
         "name": "gpt2 heatmaps", "tags": ["paper"]}
    ]  # fmt: skip


def test_a_written_spec_runs_each_experiment_on_each_model(tmp_path: Path) -> None:
    spec = tmp_path / "study.toml"
    spec.write_text(
        'models = ["builtin-gpt2", "builtin-llama"]\ndataset = "synthetic"\nfilter = "ids(0, 1)"\n\n'
        '[[experiment]]\nkind = "evaluate"\n\n'
        '[[experiment]]\nkind = "info_flow"\nsources = ["subject"]\nwindow_sizes = [4]\nname = "subject"\n'
    )
    store = tmp_path / "study.duckdb"
    output = invoke("run", spec, "--store", store, "-q").output
    with ResultsStore.open(store, read_only=True) as results:
        runs = results.runs()
    assert sorted(zip(runs["kind"], runs["model_id"], strict=True)) == [
        ("evaluate", "builtin-gpt2"), ("evaluate", "builtin-llama"), ("info_flow", "builtin-gpt2"),
        ("info_flow", "builtin-llama"),
    ]  # fmt: skip
    assert set(runs.loc[runs["kind"] == "info_flow", "name"]) == {"subject · builtin-gpt2", "subject · builtin-llama"}
    assert (runs["n_done"] == 2).all() and "infoflow report" in output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('dataset = "synthetic"\n[[experiment]]\nkind = "evaluate"\n', "give `model"),
        ('model = "builtin-gpt2"\n', "add at least one [[experiment]]"),
        ('model = "builtin-gpt2"\nlimt = 3\n[[experiment]]\nkind = "evaluate"\n', "unknown key(s) ['limt']"),
        ('model = "builtin-gpt2"\n[[experiment]]\nkind = "flow"\n', "kind must be one of evaluate, info_flow"),
        ('model = "builtin-gpt2"\n[[experiment]]\nkind = "heatmap"\nwindow_sizes = [3]\n', "it takes window_size"),
        ('model = "builtin-gpt2"\n[[experiment]\n', "not valid TOML"),
        ('model = "no-such-model"\n[[experiment]]\nkind = "evaluate"\n', "no-such-model"),
    ],
)
def test_a_bad_spec_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    output = invoke("run", spec, "--store", tmp_path / "s.duckdb", code=1).output
    assert message in output and "Traceback" not in output and output.startswith("error:")
    assert not (tmp_path / "s.duckdb").exists()


def test_toml_round_trip() -> None:
    spec = {"model": "m", "limit": 3, "filter": 'ids(1) and "x"', "experiment": [{"kind": "heatmap", "strict": True,
            "exempt_fraction": 1 / 3, "tags": ["a", "b"]}]}  # fmt: skip
    assert tomllib.loads(to_toml(spec, "a comment")) == spec
    with pytest.raises(SpecError, match="unknown option"):
        parse_spec({"model": "m", "experiment": [{"kind": "evaluate", "window_size": 3}]})


def test_a_filter_over_several_models_evaluates_each_first(tmp_path: Path) -> None:
    spec = tmp_path / "both.toml"
    spec.write_text(
        'models = ["builtin-gpt2", "builtin-llama"]\ndataset = "synthetic"\ncandidates = 40\nlimit = 2\n'
        'filter = "all-correct(builtin-gpt2, builtin-llama)"\n\n[[experiment]]\nkind = "heatmap"\nwindow_size = 4\n'
    )
    store = tmp_path / "both.duckdb"
    invoke("run", spec, "--store", store, "-q")
    with ResultsStore.open(store, read_only=True) as results:
        runs = results.runs().set_index("kind")
        heat = runs.loc["heatmap"]
        prompts = [set(results.frame(r)["prompt_id"]) for r in heat["run_id"]]
        ranks = {m: results.frame(r).set_index("prompt_id")["rank"] for m, r in zip(
            runs.loc["evaluate", "model_id"], runs.loc["evaluate", "run_id"], strict=True)}  # fmt: skip
    assert len(heat) == 2 and prompts[0] == prompts[1] and len(prompts[0]) == 2  # the same prompts for both
    assert all(ranks[m][p] == 1 for m in ranks for p in prompts[0])  # each model is right on them
