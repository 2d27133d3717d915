"""Every page of the web app, run headless with streamlit.testing (AppTest) on a small store."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from infoflow.app.launcher import ENTRY_SCRIPT
from infoflow.app.shell import PAGES
from infoflow.store import ResultsStore
from tests.app_fixtures import build_store, one_thread

TIMEOUT = 120


@pytest.fixture(scope="module")
def store_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("app") / "results.duckdb"
    return path, build_store(path)


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


def new_app(store: Path, **query: str) -> AppTest:
    at = AppTest.from_file(str(ENTRY_SCRIPT), default_timeout=TIMEOUT)
    at.session_state["store"] = str(store)
    at.query_params.update(query)
    return at


def open_page(store: Path, page: str, **query: str) -> AppTest:
    """The app on ``page`` (by its title) of ``store``, with ``query`` parameters in its URL."""
    at = new_app(store).run()  # the first run registers the pages (and draws the default one, Runs)
    at.query_params.update(query)
    file = next(p.file for p in PAGES if p.title == page)
    return at.switch_page(f"page_scripts/{file}").run()


def charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def trace_types(chart) -> list[str]:
    return [trace["type"] for trace in json.loads(chart.proto.spec)["data"]]


def messages(at: AppTest) -> str:
    return " ".join(e.value for e in at.error)


def test_runs_page_lists_runs_with_status_rows_and_export(store_runs: tuple[Path, dict[str, str]]) -> None:
    store, runs = store_runs
    at = open_page(store, "Runs")
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert set(runs.values()) <= set(table["run_id"])
    flow = table.set_index("run_id").loc[runs["info_flow_mamba1"]]
    assert flow["status"] == "complete (1 errors)" and flow["prompts"] == "3/4" and flow["rows"] == 3 * 4 * 3 * 5
    at.selectbox(key="runs_run").set_value(runs["info_flow_mamba1"]).run()
    details, errors = (frame.value for frame in at.dataframe[1:3])
    assert "subject 'Nobody Here' not in prompt" in errors["reason"].iloc[0]
    fields = details.set_index("field")["value"]
    assert fields["run"] == runs["info_flow_mamba1"] and fields["rows"] == str(3 * 4 * 3 * 5)
    assert at.get("download_button"), "export button missing"


def test_runs_page_names_and_tags_a_run(store_runs: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    store, runs = store_runs
    copy = tmp_path / "copy.duckdb"
    shutil.copy(store, copy)
    at = open_page(copy, "Runs")
    at.selectbox(key="runs_run").set_value(runs["heatmap_gpt2"]).run()
    at.text_input(key=f"runs_name_{runs['heatmap_gpt2']}").set_value("gpt2 heatmaps").run()
    at.text_input(key=f"runs_tags_{runs['heatmap_gpt2']}").set_value("paper, draft").run()
    at.button(key="runs_label").click().run()
    assert not at.exception and "gpt2 heatmaps" in at.dataframe[0].value["name"].tolist()
    with ResultsStore.open(copy, read_only=True) as results:
        run = results.run("gpt2 heatmaps")
    assert (run.run_id, run.tags) == (runs["heatmap_gpt2"], ("draft", "paper"))


def test_runs_page_deletes_a_run(store_runs: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    store, runs = store_runs
    copy = tmp_path / "copy.duckdb"
    shutil.copy(store, copy)
    at = open_page(copy, "Runs")
    at.selectbox(key="runs_run").set_value(runs["heatmap_gpt2"]).run()
    assert at.button(key="runs_delete").disabled
    at.checkbox(key="runs_confirm").check().run()
    at.button(key="runs_delete").click().run()
    assert not at.exception
    assert any(f"deleted run {runs['heatmap_gpt2']}" in s.value for s in at.success)
    with ResultsStore.open(copy, read_only=True) as results:
        assert runs["heatmap_gpt2"] not in set(results.runs()["run_id"])


@pytest.mark.parametrize("page", ["Runs", "Compare info flow", "Heatmaps", "Launch"])
def test_missing_store_is_a_clear_message(tmp_path: Path, page: str) -> None:
    at = open_page(tmp_path / "missing.duckdb", page)
    assert not at.exception
    if page == "Launch":  # launching creates the store; nothing to read yet
        assert not at.error
    else:
        assert "No results store at" in messages(at)


@pytest.mark.parametrize(("page", "kind"), [("Compare info flow", "info-flow"), ("Heatmaps", "heatmap")])
def test_store_without_such_runs_says_where_to_start_one(tmp_path: Path, page: str, kind: str) -> None:
    empty = tmp_path / "empty.duckdb"
    with ResultsStore.open(empty):
        pass
    at = open_page(empty, page)
    assert not at.exception and not at.error
    assert [i.value for i in at.info] == [f"No {kind} runs in this store yet: start one on the Launch page."]


def test_not_a_store_is_a_clear_message(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.duckdb"
    bogus.write_text("not a database")
    at = open_page(bogus, "Runs")
    assert not at.exception and "Results store:" in messages(at)


def test_compare_page_curves_filters_and_downloads(store_runs: tuple[Path, dict[str, str]]) -> None:
    store, _ = store_runs
    at = open_page(store, "Compare info flow")
    assert not at.exception and not at.error
    assert len(charts(at)) == 1
    at.radio(key="compare_metric").set_value("hit").run()
    at.radio(key="compare_x").set_value("window").run()
    at.text_input(key="compare_filter").set_value("ids(0, 1)").run()
    assert not at.error and any("2 prompts" in c.value for c in at.caption)
    at.button(key="compare_png").click().run()
    assert not at.exception and len(at.get("download_button")) == 2
    at.text_input(key="compare_filter").set_value("correct").run()
    assert "Prompt filter: no evaluate results" in messages(at)
    at.text_input(key="compare_filter").set_value("ids(0").run()
    assert "Prompt filter" in messages(at) and not at.exception


def test_heatmaps_page_side_by_side(store_runs: tuple[Path, dict[str, str]]) -> None:
    store, _ = store_runs
    at = open_page(store, "Heatmaps")
    assert not at.exception and not at.error
    assert len(at.multiselect(key="heatmap_runs").value) == 2  # the latest run of each model
    assert trace_types(charts(at)[0]) == ["heatmap", "heatmap"]
    at.radio(key="heatmap_scale").set_value("largest change").run()
    assert not at.error


def test_explorer_page_runs_live(tmp_path: Path) -> None:
    at = open_page(tmp_path / "unused.duckdb", "Explorer")
    assert not at.error and at.selectbox(key="explorer_model").value == "builtin-mamba1"
    at.button(key="explorer_run").click().run()
    assert not at.exception and not at.error
    assert "subject 'Thargol Tesbrammon Silwen' (found)" in at.success[0].value
    assert len(charts(at)) == 2  # heatmap and per-source curves
    assert trace_types(charts(at)[0]) == ["heatmap"]
    spec = json.loads(charts(at)[0].proto.spec)
    assert sum(label.startswith("<b>▸") for label in spec["data"][0]["y"]) == 6  # the subject's six tokens
    assert "target '" in spec["layout"]["title"]["text"]  # the model's own top-1 here


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"explorer_subject": "Gandalf"}, "Bad prompt: subject 'Gandalf' not in prompt"),
        ({"explorer_prompt": "where was it born? in"}, "subject not found"),
        ({"explorer_prompt": "   "}, "type a prompt first"),
        ({"explorer_model": "other: local folder, .gguf file or hub id", "explorer_model_other": "/no/such/model"},
         "Model load failure"),
    ],
)  # fmt: skip
def test_explorer_errors_are_messages(tmp_path: Path, fields: dict[str, str], expected: str) -> None:
    at = new_app(tmp_path / "unused.duckdb").run()
    for key, value in fields.items():
        at.session_state[key] = value
    at.switch_page("page_scripts/explorer.py").run()
    at.button(key="explorer_run").click().run()
    assert not at.exception
    assert expected in messages(at)


def test_hidden_attention_page_computes_and_reads_runs(store_runs: tuple[Path, dict[str, str]]) -> None:
    store, _ = store_runs
    at = open_page(store, "Hidden attention")
    at.selectbox(key="hidden_model").set_value("builtin-mamba2").run()
    at.button(key="hidden_run").click().run()
    assert not at.exception and not at.error
    options = at.selectbox(key="hidden_feature").options
    assert options[0] == "mean" and options[-10:] == [str(h) for h in range(10)]  # Mamba-2: 10 heads
    assert len(options) == 1 + 3 + 10  # and the means over the three decay categories
    at.selectbox(key="hidden_feature").set_value("3").run()
    assert "head 3" in charts(at)[0].proto.spec
    at.selectbox(key="hidden_feature").set_value(options[1]).run()
    assert not at.exception and "mean over the heads of" in charts(at)[0].proto.spec
    at.radio(key="hidden_source").set_value("stored attention run").run()
    assert not at.error and len(charts(at)) == 1
    assert len(at.selectbox(key="hidden_feature").options) == 1 + 4  # builtin-gpt2: 4 heads


def test_features_page(store_runs: tuple[Path, dict[str, str]]) -> None:
    store, _ = store_runs
    at = open_page(store, "Mamba features")
    assert not at.exception and not at.error
    spec = charts(at)[0].proto.spec
    assert "fast-decay, context-independent" in spec and "slow-decay, context-dependent" in spec and "middle" in spec
    at.button(key="features_run").click().run()
    assert not at.error and len(charts(at)) == 3  # histogram, live effect, stored run
    live = charts(at)[1].proto.spec
    # the categories by their one name, in their fixed colours (as in the static figures)
    assert "context-dependent (slow-decay) features knocked out" in live and "#E69F00" in live
    assert "context-independent (fast-decay) features knocked out" in live and "#56B4E9" in live
    at.selectbox(key="features_model").set_value("other: local folder, .gguf file or hub id").run()
    at.text_input(key="features_model_other").set_value("builtin-gpt2").run()
    assert "has no layer whose features decay" in messages(at)


def test_launch_page_starts_a_run_with_progress(tmp_path: Path) -> None:
    store = tmp_path / "new.duckdb"
    at = open_page(store, "Launch")
    at.radio(key="launch_kind").set_value("heatmap").run()
    at.selectbox(key="launch_model").set_value("builtin-gpt2").run()
    at.number_input(key="launch_limit").set_value(1).run()
    at.button(key="launch_start").click().run()
    assert not at.exception and not at.error
    assert "complete" in at.success[0].value
    with ResultsStore.open(store, read_only=True) as results:
        frame = results.runs()
    assert list(frame["kind"]) == ["heatmap"] and frame["n_done"].iloc[0] == 1


def test_launch_page_bad_dataset_is_a_message(tmp_path: Path) -> None:
    at = open_page(tmp_path / "new.duckdb", "Launch")
    at.text_input(key="launch_dataset").set_value(str(tmp_path / "nothing.csv")).run()
    at.button(key="launch_start").click().run()
    assert not at.exception and at.error


def test_pages_have_their_own_urls() -> None:
    assert [p.url_path for p in PAGES] == [
        "runs", "prompts", "compare", "heatmaps", "recall", "explorer", "hidden-attention", "features", "launch",
    ]  # fmt: skip
    assert all((ENTRY_SCRIPT.parent / "page_scripts" / p.file).is_file() for p in PAGES)


def test_runs_page_reads_and_writes_the_run_in_the_url(store_runs: tuple[Path, dict[str, str]]) -> None:
    store, runs = store_runs
    at = open_page(store, "Runs", run=runs["heatmap_gpt2"])
    assert not at.exception and at.selectbox(key="runs_run").value == runs["heatmap_gpt2"]
    at.selectbox(key="runs_run").set_value(runs["info_flow_mamba1"]).run()
    assert at.query_params["run"] == runs["info_flow_mamba1"]  # the URL follows the choice
    links = [link.proto for link in at.get("page_link")]
    assert any("prompts" in link.page for link in links) and any("compare" in link.page for link in links)


def test_prompts_page_table_opens_a_prompt_with_top_k_after_a_knockout(
    store_runs: tuple[Path, dict[str, str]],
) -> None:
    store, runs = store_runs
    at = open_page(store, "Prompts", run=runs["heatmap_mamba1"], prompt="0")
    assert not at.exception and not at.error
    assert at.selectbox(key="prompts_run").value == runs["heatmap_mamba1"]
    table = at.dataframe[0].value
    assert list(table.columns[:6]) == ["prompt_id", "prompt", "subject", "target", "p0", "effect (%)"]
    assert any("Prompt 0: 'Thargol Tesbrammon Silwen" in h.value for h in at.subheader)
    spec = json.loads(charts(at)[0].proto.spec)
    labels = spec["data"][0]["y"]
    assert labels[1].startswith("<b>▸ 1: Th") and not labels[7].startswith("<b>")  # the subject's rows marked
    assert "target ' Tornhal'" in spec["layout"]["title"]["text"]  # the target named
    after = at.dataframe[1].value
    assert list(after.columns) == ["rank", "token", "p", "p clean", "change", "target"] and len(after) == 10
    at.select_slider(key="prompts_window").set_value(2).run()
    at.selectbox(key="prompts_position").set_value(3).run()
    assert not at.exception and any("p(target)" in c.value for c in at.caption)
    at.radio(key="prompts_sort").set_value("p0 (highest first)").run()
    assert at.dataframe[0].value["p0"].is_monotonic_decreasing


def test_prompts_page_of_an_info_flow_run_draws_the_prompts_curves(store_runs: tuple[Path, dict[str, str]]) -> None:
    store, runs = store_runs
    at = open_page(store, "Prompts", run=runs["info_flow_mamba1"], prompt="1")
    assert not at.exception and not at.error
    assert trace_types(charts(at)[0])[:2] == ["scatter", "scatter"]  # band and mean, per source
    at.selectbox(key="prompts_category").set_value("fast_decay").run()
    assert not at.exception and len(at.dataframe) == 2
    assert at.query_params["prompt"] == "1" and at.query_params["run"] == runs["info_flow_mamba1"]


def test_heatmaps_page_marks_subject_and_target(store_runs: tuple[Path, dict[str, str]]) -> None:
    store, runs = store_runs
    at = open_page(store, "Heatmaps", run=runs["heatmap_gpt2"])
    assert at.multiselect(key="heatmap_runs").value == [runs["heatmap_gpt2"]]  # the run from the URL
    spec = json.loads(charts(at)[0].proto.spec)
    assert "target ' Tornhal'" in spec["layout"]["title"]["text"]
    middle = spec["data"][0]["colorscale"][5][1]  # the colour of 0 on the diverging map: near white
    assert min(int(middle[i : i + 2], 16) for i in (1, 3, 5)) > 0xF0 and spec["data"][0]["zmin"] == -0.3


def test_hidden_attention_is_diverging_and_blank_above_the_diagonal(store_runs: tuple[Path, dict[str, str]]) -> None:
    store, _ = store_runs
    at = open_page(store, "Hidden attention")
    at.radio(key="hidden_source").set_value("stored attention run").run()
    trace = json.loads(charts(at)[0].proto.spec)["data"][0]
    assert trace["zmid"] == 0 and trace["zmin"] == -trace["zmax"]
    z = trace["z"]  # plotly's typed array: base64 of the values, row by row
    shape = [int(n) for n in str(z["shape"]).split(",")]
    values = np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)
    assert np.isnan(values[np.triu_indices(shape[0], 1)]).all()  # the future is blank, not 0
    assert np.isfinite(values[np.tril_indices(shape[0])]).all()
