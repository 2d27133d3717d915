"""Hybrid sweeps end to end: ``infoflow info-flow --mixers`` on a tiny random Bamba (with the built-in tokenizer),
one run per mixers value, refused before any work on a model that lacks the mixers; the report, ``plot --lines
mixers``, the figure set and the app's launch page show (or start) the split through attention and through the
recurrence."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infoflow.app.launch import LaunchRequest, launch
from infoflow.figures import FigureSetOptions, make_figures
from infoflow.interventions.mixers import Mixers
from infoflow.models.load import load_model
from infoflow.models.registry import BUILTIN_DIR
from infoflow.store import ResultsStore
from tests.cli_support import invoke, wide_consoles
from tests.oracle import randomize_
from tests.tiny_hybrids import tiny_hybrids

FLOW = ["info-flow", "-w", "2", "--filter", "all", "-n", "2", "--source", "subject", "--source", "last", "-q"]


@pytest.fixture(scope="module")
def bamba(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Bamba (layers: Mamba-2, attention, Mamba-2, Mamba-2) with the built-in models' tokenizer."""
    folder = tmp_path_factory.mktemp("bamba")
    randomize_(tiny_hybrids(1024)["bamba"](), seed=3).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(BUILTIN_DIR / "gpt2" / name, folder / name)
    return folder


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wide_consoles(monkeypatch)
    monkeypatch.setenv("INFOFLOW_STORE", str(tmp_path / "default.duckdb"))


@pytest.mark.slow  # about 8 s: four info-flow commands, the report and a plot
def test_runs_per_mixers_value_and_their_split(bamba: Path, tmp_path: Path) -> None:
    store = tmp_path / "results.duckdb"
    for mixers in ("all", "attention", "ssm"):
        invoke(*FLOW, "-m", bamba, "--mixers", mixers, "--store", store)
    invoke(*FLOW, "-m", bamba, "--mixers", "attention", "--store", store)  # resumes its run
    with ResultsStore.open(store, read_only=True) as results:
        runs = results.runs()
        flows = runs[runs["kind"] == "info_flow"]
        assert len(flows) == 3
        by_mixers = {results.run(r).manifest.params.get("mixers", "all"): r for r in flows["run_id"]}
        assert set(by_mixers) == {"all", "attention", "recurrent"}
        assert "mixers=recurrent" in results.run(by_mixers["recurrent"]).name
        frames = {m: results.frame(r) for m, r in by_mixers.items()}
    assert all(len(frame) == 2 * 2 * 3 for frame in frames.values())  # prompts x sources x windows
    assert not frames["attention"]["p"].equals(frames["recurrent"]["p"])
    report = tmp_path / "report.html"
    invoke("report", "--store", store, "--out", report)
    assert "through attention vs through the recurrence" in report.read_text()
    result = invoke("plot", *by_mixers.values(), "--lines", "mixers", "--store", store, "--out", tmp_path / "figs")
    assert sorted(Path(line.split()[-1]).suffix for line in result.output.splitlines() if "wrote" in line) == [
        ".pdf",
        ".png",
        ".txt",
    ]


def test_mixers_a_model_lacks_are_refused_before_any_work(tmp_path: Path) -> None:
    store = tmp_path / "results.duckdb"
    result = invoke(*FLOW, "-m", "builtin-mamba1", "--mixers", "attention", "--store", store, code=1)
    assert "--mixers attention: this mamba1 model (8 selective_scan layers) has no attention layers" in result.output
    assert len(result.output.strip().splitlines()) == 1
    with ResultsStore.open(store, read_only=True) as results:
        assert results.runs().empty  # no evaluation for the prompt filter, no run
    result = invoke("heatmap", "-m", "builtin-gpt2", "--mixers", "recurrent", "--store", store, code=1)
    assert "has no recurrent layers" in result.output
    result = invoke(*FLOW, "--mixers", "mamba", "--store", store, code=2)  # a usage error, before any loading
    assert "unknown --mixers value 'mamba'" in result.output


@pytest.mark.slow  # about 10 s: 4 window sizes x 3 categories, the split runs, heatmaps, 9 figures as PNG and PDF
def test_figure_set_of_a_hybrid_draws_the_split(bamba: Path, tmp_path: Path) -> None:
    options = FigureSetOptions(prompt_filter="all", n_prompts=2, candidates=4, n_heatmaps=1, show_progress=False)
    index = make_figures([str(bamba)], tmp_path / "out", tmp_path / "results.duckdb", options, progress=lambda _: None)
    name = bamba.name
    assert (tmp_path / "out" / f"mixers-{name}.png").stat().st_size > 10_000
    text = index.read_text()
    assert f"(mixers-{name}.png)" in text and "attention layers are knocked out whole" in text


def test_app_launch_takes_the_mixers(bamba: Path, tmp_path: Path) -> None:
    """The app's launch page starts a restricted run, and refuses mixers the model lacks before choosing prompts."""
    with ResultsStore.open(tmp_path / "results.duckdb") as store:
        request = LaunchRequest(limit=1, window_size=2, mixers=Mixers("recurrent"))
        run_id = launch(load_model(str(bamba)), store, request)
        assert store.run(run_id).manifest.params["mixers"] == "recurrent"
        with pytest.raises(ValueError, match="has no attention layers"):
            launch(load_model("builtin-mamba1"), store, LaunchRequest(mixers=Mixers("attention")))
        assert len(store.runs()) == 1


def test_app_compare_draws_the_split(bamba: Path, tmp_path: Path) -> None:
    """The app's Compare page: one hybrid's runs that differ in mixers are lines of their own."""
    from infoflow.app.compare import curve_points, load_rows, png_figure

    store = tmp_path / "results.duckdb"
    for mixers in ("all", "attention"):
        invoke(*FLOW, "-m", bamba, "--mixers", mixers, "--store", store)
    with ResultsStore.open(store, read_only=True) as results:
        frame = load_rows(results, list(results.runs().query("kind == 'info_flow'")["run_id"]))
    assert sorted(curve_points(frame)["line"].unique()) == ["all", "attention"]
    assert png_figure(frame)[:4] == b"\x89PNG"
