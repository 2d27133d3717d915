"""The Recall methods page, headless (streamlit.testing): stored causal-tracing, sublayer-knockout and
vocabulary-projection runs of the built-in GPT-2 drawn with the paper-style figures, and the logit lens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infoflow.app import recall
from infoflow.data import load_dataset
from infoflow.engines.fast import FastEngine
from infoflow.experiments.causal_tracing import CausalTracingParams, causal_tracing
from infoflow.experiments.runner import RunContext
from infoflow.experiments.sublayer_knockout import SublayerKnockoutParams, sublayer_knockout
from infoflow.experiments.vocab_projection import vocab_projection
from infoflow.models import load_model
from infoflow.plots import runs_frame
from infoflow.store import ResultsStore
from tests.app_fixtures import one_thread
from tests.test_app_pages import open_page


@pytest.fixture(scope="module")
def recall_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """builtin-gpt2's three recall runs on two synthetic prompts."""
    path = tmp_path_factory.mktemp("recall") / "results.duckdb"
    prompts = load_dataset("synthetic")[:2]
    loaded = load_model("builtin-gpt2")
    with one_thread(), ResultsStore.open(path) as store:
        context = RunContext(loaded, FastEngine(loaded.model), store, "synthetic", "all", show_progress=False)
        runs = {
            "causal_tracing": causal_tracing(
                context, prompts, CausalTracingParams(sites=("residual", "mlp"), samples=1)
            ),
            "sublayer_knockout": sublayer_knockout(context, prompts, SublayerKnockoutParams(window_sizes=(4,))),
            "vocab_projection": vocab_projection(context, prompts),
        }
    return path, runs


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


def images(at) -> int:
    return len(at.get("image"))


def test_each_method_draws_its_runs(recall_store: tuple[Path, dict[str, str]]) -> None:
    store, _ = recall_store
    at = open_page(store, "Recall methods")
    assert not at.exception and not at.error
    assert at.radio(key="recall_method").value == "causal_tracing" and images(at) == 1  # the mean grid
    at.selectbox(key="recall_tracing_prompt").set_value(0).run()
    assert not at.exception and not at.error and images(at) == 1  # one prompt's grid
    at.radio(key="recall_method").set_value("sublayer_knockout").run()
    assert not at.exception and not at.error and images(at) == 1
    assert at.query_params["method"] == "sublayer_knockout"  # the URL follows the choice
    at.radio(key="recall_method").set_value("vocab_projection").run()
    assert not at.exception and not at.error and images(at) == 1
    table = at.dataframe[0].value
    assert list(table.columns) == ["layer", "site", "top tokens", "p(target)", "target rank"]
    assert sorted(set(table["site"])) == ["mixer", "mlp", "residual"] and len(table) == 3 * 8


def test_page_opens_on_the_method_in_the_url(recall_store: tuple[Path, dict[str, str]]) -> None:
    store, runs = recall_store
    at = open_page(store, "Recall methods", method="vocab_projection", run=runs["vocab_projection"])
    assert not at.exception and not at.error
    assert at.radio(key="recall_method").value == "vocab_projection"
    assert at.multiselect(key="recall_runs_vocab_projection").value == [runs["vocab_projection"]]


def test_a_store_without_recall_runs_says_so(tmp_path: Path) -> None:
    with ResultsStore.open(tmp_path / "empty.duckdb"):
        pass
    at = open_page(tmp_path / "empty.duckdb", "Recall methods")
    assert not at.exception and not at.error
    assert "No causal-tracing runs" in at.info[0].value


def test_logit_lens_table_reads_the_stored_top_tokens(recall_store: tuple[Path, dict[str, str]]) -> None:
    store, runs = recall_store
    with ResultsStore.open(store, read_only=True) as results:
        frame = recall.load_rows("vocab_projection", results, [runs["vocab_projection"]])
        tracing = runs_frame(results, [runs["causal_tracing"]], "causal_tracing")
    table = recall.logit_lens_table(frame, runs["vocab_projection"], 0, "last")
    row = frame[(frame.prompt_id == 0) & (frame.position_role == "last") & (frame.site == "residual")]
    last = row[row.layer == 7].iloc[0]
    (_, text, p), *_ = json.loads(last.top_tokens)
    shown = table[(table.layer == 7) & (table.site == "residual")].iloc[0]
    assert shown["top tokens"].startswith(f"{text!r} {p:.2f}") and shown["target rank"] == last.target_rank
    texts = recall.prompt_texts(tracing)
    assert texts[0] == load_dataset("synthetic")[0].prompt.strip()
    with pytest.raises(ValueError, match="choose causal_tracing"):
        recall.load_rows("heatmap", None, [])  # type: ignore[arg-type]
