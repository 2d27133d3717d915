"""The recall commands end to end on the built-in GPT-2: sublayer-knockout, causal-tracing and vocab-projection
runs stored, resumed, plotted; their options refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from infoflow.store import ResultsStore
from tests.cli_support import MODEL, invoke, wide_consoles, write_facts_csv


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    wide_consoles(monkeypatch)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_facts_csv(tmp_path_factory.mktemp("data"))


def run_of(store: Path, kind: str) -> str:
    with ResultsStore.open(store, read_only=True) as results:
        runs = results.runs()
    (run_id,) = runs.loc[runs["kind"] == kind, "run_id"]
    return str(run_id)


@pytest.mark.slow
def test_recall_commands_store_resume_and_plot(dataset: Path, tmp_path: Path) -> None:
    store, folder = tmp_path / "r.duckdb", tmp_path / "figures"
    common = ["-m", MODEL, "-d", dataset, "--store", store, "--filter", "ids(2, 3)", "-q"]
    invoke("sublayer-knockout", *common, "-w", 4)
    invoke("causal-tracing", *common, "--samples", 2, "--site", "mlp", "--site", "residual")
    invoke("vocab-projection", *common, "--top-k", 3)
    with ResultsStore.open(store, read_only=True) as results:
        frames = {
            kind: results.frame(run_of(store, kind))
            for kind in ("sublayer_knockout", "causal_tracing", "vocab_projection")
        }
    assert len(frames["sublayer_knockout"]) == 2 * 2 * 5  # prompts x (mixer, mlp) x windows of 4 in 8 layers
    assert set(frames["causal_tracing"]["site"]) == {"mlp", "residual"}
    assert set(frames["vocab_projection"]["position_role"]) == {"subject_last", "last"}
    invoke("causal-tracing", *common, "--samples", 2, "--site", "mlp", "--site", "residual")  # resumed
    with ResultsStore.open(store, read_only=True) as results:
        assert len(results.frame(run_of(store, "causal_tracing"))) == len(frames["causal_tracing"])
    for kind in frames:
        output = invoke("plot", run_of(store, kind), "--store", store, "-o", folder).output
        assert ".png" in output
    for path in folder.iterdir():
        if path.suffix == ".txt":  # the caption: which run and prompts the figure shows
            assert "run " in path.read_text()
            continue
        magic = b"\x89PNG" if path.suffix == ".png" else b"%PDF"
        assert path.read_bytes().startswith(magic) and path.stat().st_size > 1000
    names = sorted(p.name for p in folder.glob("*.png"))
    assert len(names) == 1 + (1 + 2) + 1  # sublayer curves; tracing mean and per prompt; projection rates
    assert any("causal_tracing" in name and name.endswith("-mean.png") for name in names)
    invoke("report", "--store", store, "-o", tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert all(
        f"<h3>{title}</h3>" in page for title in ("Sublayer knockout", "Causal tracing", "Vocabulary projection")
    )


def test_recall_commands_refuse_what_the_model_lacks(dataset: Path, tmp_path: Path) -> None:
    common = ["-m", "builtin-mamba1", "-d", dataset, "--store", tmp_path / "r.duckdb", "-q"]
    output = invoke("sublayer-knockout", *common, "--site", "mlp", code=1).output
    assert "this mamba1 model's layers have no MLP; leave out the site mlp" in output
    output = invoke("causal-tracing", *common, "-w", 20, code=1).output
    assert "window size 20 is larger than the model's 8 layers" in output
    assert "invalid value" in invoke("vocab-projection", *common, "--site", "attention", code=2).output.lower()
