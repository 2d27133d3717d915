"""Figures and report: aggregation against an independent computation, depth axis, files, HTML."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from infoflow.plots import (
    aggregate,
    aggregate_by_depth,
    flow_minima,
    heatmap_figure,
    heatmap_matrix,
    info_flow_figure,
    runs_frame,
    save_figure,
)
from infoflow.report import write_report
from infoflow.store import Manifest, ResultsStore

matplotlib.use("Agg")

SOURCES = ("first", "relation_minus_last", "last", "relation", "subject")  # not in plotting order on purpose
TOKENS = ["<s>", "The", " Eiffel", " Tower", " costs", " $5", " in"]


def _flow_rows(n_prompts: int, n_layers: int, window_size: int, categories: tuple[str, ...], seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for prompt in range(n_prompts):
        p0 = float(rng.uniform(0.2, 0.9))
        for category in categories:
            for source in SOURCES:
                for start in range(n_layers - window_size + 1):
                    diff = float(rng.normal(-30 if source == "subject" else 0, 10))
                    rows.append(
                        {
                            "prompt_id": prompt,
                            "target": "last",
                            "source": source,
                            "feature_category": category,
                            "window_size": window_size,
                            "window_start": start,
                            "p": p0 * (1 + diff / 100),
                            "diff": diff,
                            "hit": diff > -20,
                            "p0": p0,
                        }
                    )
    return rows


def _heatmap_rows(prompt_id: int, n_layers: int, window_size: int, p0: float) -> list[dict]:
    return [
        {
            "prompt_id": prompt_id,
            "window_size": window_size,
            "window_start": start,
            "position": position,
            "token": token,
            "p": p0 - 0.1 * position * start / n_layers,
            "p0": p0,
        }
        for start in range(n_layers - window_size + 1)
        for position, token in enumerate(TOKENS)
    ]


def _start(store: ResultsStore, kind: str, model: str, n_layers: int) -> str:
    manifest = Manifest(
        kind=kind,
        model_id=model,
        model_revision="r1",
        dataset="counterfact",
        dataset_filter="all_correct",
        params={"n_layers": n_layers},
    )
    return store.start_run(manifest).run_id


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultsStore]:
    with ResultsStore.open(tmp_path / "results.duckdb") as s:
        yield s


@pytest.fixture
def runs(store: ResultsStore) -> dict[str, str]:
    """Two info-flow runs (a Mamba with feature categories, a deeper transformer) and two heatmap runs."""
    mamba = _start(store, "info_flow", "state-spaces/mamba-130m-hf", 12)
    store.add_rows(mamba, _flow_rows(5, 12, 3, ("all", "fast_decay", "slow_decay"), seed=0))
    store.add_errors(mamba, {90: "subject ' Foo' not in prompt", 91: "subject ' Bar' not in prompt"})
    gpt2 = _start(store, "info_flow", "openai-community/gpt2", 24)
    store.add_rows(gpt2, _flow_rows(4, 24, 3, ("all",), seed=1))
    heat_mamba = _start(store, "heatmap", "state-spaces/mamba-130m-hf", 12)
    store.add_rows(heat_mamba, _heatmap_rows(7, 12, 3, 0.6))
    heat_gpt2 = _start(store, "heatmap", "openai-community/gpt2", 24)
    store.add_rows(heat_gpt2, _heatmap_rows(7, 24, 3, 0.4))
    return {"mamba": mamba, "gpt2": gpt2, "heat_mamba": heat_mamba, "heat_gpt2": heat_gpt2}


# --- aggregation ---


def _expected(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval computed independently (scipy's interval, ddof 1)."""
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    if std == 0.0:
        return mean, mean, mean
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=std / np.sqrt(len(values)))
    return mean, float(low), float(high)


def test_aggregate_matches_independent_t_interval() -> None:
    rng = np.random.default_rng(3)
    groups = {("a", 0): rng.normal(-20, 15, 7), ("a", 1): np.array([-12.5]), ("b", 0): np.full(4, -7.0)}
    groups[("b", 1)] = rng.normal(5, 1, 30)
    frame = pd.DataFrame(
        [
            {"line": line, "window_start": w, "prompt_id": i, "diff": v, "hit": v > -10}
            for (line, w), values in groups.items()
            for i, v in enumerate(values)
        ]
    )
    out = aggregate(frame, ["line"], "diff", interval="t").set_index(["line", "window_start"])
    for key, values in groups.items():
        mean, low, high = _expected(values)
        row = out.loc[key]
        assert row["n"] == len(values)
        assert row["mean"] == pytest.approx(mean)
        assert row["low"] == pytest.approx(low)
        assert row["high"] == pytest.approx(high)
    assert out.loc[("a", 1), "low"] == out.loc[("a", 1), "high"] == -12.5  # n == 1: band collapses
    assert out.loc[("b", 0), "low"] == out.loc[("b", 0), "high"] == -7.0  # std == 0: band collapses

    hits = aggregate(frame, ["line"], "hit", interval="t").set_index(["line", "window_start"])
    for key, values in groups.items():
        mean, low, high = _expected((values > -10).astype(float) * 100)
        assert (hits.loc[key, "mean"], hits.loc[key, "low"], hits.loc[key, "high"]) == pytest.approx((mean, low, high))


def test_bootstrap_interval_stays_where_a_percent_change_can_be() -> None:
    """A skewed change of p (most prompts near -100 %, a few far above 0): the Student-t band crosses -100 %,
    the default percentile bootstrap does not; on symmetric values the two nearly agree."""
    rng = np.random.default_rng(0)
    skewed = np.concatenate([np.full(12, -99.0), rng.uniform(200, 900, 3)])
    normal = rng.normal(-20, 5, 200)
    frame = pd.DataFrame(
        [{"window_start": w, "prompt_id": i, "diff": v, "hit": False} for w, values in enumerate((skewed, normal))
         for i, v in enumerate(values)]
    )  # fmt: skip
    boot = aggregate(frame, metric="diff").set_index("window_start")
    t = aggregate(frame, metric="diff", interval="t").set_index("window_start")
    assert t.loc[0, "low"] < -100 <= boot.loc[0, "low"] < boot.loc[0, "mean"] < boot.loc[0, "high"]
    # a resampled mean lies between the smallest and the largest value
    assert skewed.min() <= boot.loc[0, "low"] and boot.loc[0, "high"] <= skewed.max()
    np.testing.assert_allclose(boot.loc[1, ["low", "high"]], t.loc[1, ["low", "high"]], atol=0.15)
    # independent oracle: the quantiles of the means of resamples drawn the same way
    draws = np.random.default_rng(0).integers(0, len(skewed), size=(2000, len(skewed)))
    expected = np.quantile(skewed[draws].mean(axis=1), [0.025, 0.975])
    np.testing.assert_allclose(boot.loc[0, ["low", "high"]].to_numpy(float), expected)
    assert (aggregate(frame, metric="diff") == boot.reset_index()).all().all()  # seeded: the same twice


def _linear_frame(model: str, n_layers: int | None, window_size: int, last_start: int, slope: float) -> pd.DataFrame:
    starts = np.arange(last_start + 1)
    return pd.DataFrame(
        {
            "model": model,
            "n_layers": n_layers,
            "window_size": window_size,
            "window_start": starts,
            "prompt_id": 0,
            "diff": slope * starts,
            "hit": True,
        }
    )


def test_depth_axis_endpoints_and_common_grid() -> None:
    shallow = _linear_frame("shallow", 12, 3, 9, slope=-10.0)  # windows 0..9: depth 0 -> 0, 100 -> -90
    deep = _linear_frame("deep", 24, 3, 21, slope=-1.0)  # windows 0..21: depth 100 -> -21
    out = aggregate_by_depth(pd.concat([shallow, deep]), ["model"])
    assert out.groupby("model").size().to_dict() == {"deep": 22, "shallow": 22}  # most windows of any line
    for model, last in (("shallow", -90.0), ("deep", -21.0)):
        line = out[out["model"] == model]
        assert line["depth"].iloc[0] == 0.0 and line["depth"].iloc[-1] == 100.0
        assert line["mean"].iloc[0] == pytest.approx(0.0)
        assert line["mean"].iloc[-1] == pytest.approx(last)
        # linear in depth, so linear interpolation is exact everywhere
        assert line["mean"].to_numpy() == pytest.approx(last * line["depth"].to_numpy() / 100)


def test_depth_axis_partial_and_unknown_depth() -> None:
    partial = _linear_frame("m", 12, 3, 9, slope=-10.0).query("window_start <= 6")  # last 3 windows missing
    out = aggregate_by_depth(partial, ["model"])
    assert len(out) == 10  # n_layers - window_size + 1 points
    assert out["mean"].iloc[:7].to_numpy() == pytest.approx(-10.0 * np.arange(7))
    assert out["mean"].iloc[7:].isna().all()  # not extrapolated
    unknown = _linear_frame("m", None, 3, 9, slope=-10.0).query("window_start <= 6")
    out = aggregate_by_depth(unknown, ["model"])  # without n_layers: the last window present is 100 %
    assert len(out) == 7 and out["mean"].iloc[-1] == pytest.approx(-60.0)


def test_flow_minima(store: ResultsStore, runs: dict[str, str]) -> None:
    frame = runs_frame(store, [runs["mamba"]], "info_flow")
    minima = flow_minima(frame)
    assert len(minima) == len(SOURCES) * 3
    assert minima["source"].iloc[:4].tolist() == ["subject"] * 3 + ["relation"]  # paper order first
    means = aggregate(frame, ["source", "feature_category"], "diff")
    subject = means[(means["source"] == "subject") & (means["feature_category"] == "all")]
    best = minima[(minima["source"] == "subject") & (minima["feature_category"] == "all")].iloc[0]
    assert best["min_mean_diff"] == pytest.approx(subject["mean"].min())
    assert best["depth"] == pytest.approx(100 * best["window_start"] / (12 - 3))


# --- figures ---


def _assert_written(paths: list[Path]) -> None:
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    for path in paths:
        assert path.stat().st_size > 10_000
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"


def test_info_flow_figures(store: ResultsStore, runs: dict[str, str], tmp_path: Path) -> None:
    frame = runs_frame(store, [runs["mamba"], runs["gpt2"]], "info_flow")
    models = info_flow_figure(frame[frame["feature_category"] == "all"], lines="model")
    titles = [ax.get_title() for ax in models.axes if ax.get_visible()]
    assert titles == [f"{s} → last" for s in ("subject", "relation", "last", "first", "relation_minus_last")]
    legend = [t.get_text() for t in models.legends[0].get_texts()]
    assert legend == ["state-spaces/mamba-130m-hf (n = 5)", "openai-community/gpt2 (n = 4)"]
    assert "window size 3" in models.get_suptitle() and "all_correct" in models.get_suptitle()
    _assert_written(save_figure(models, tmp_path / "figs" / "models"))

    mamba = frame[frame["model"] == "state-spaces/mamba-130m-hf"]
    categories = info_flow_figure(mamba, lines="feature_category", metric="hit", x="window", sources=["subject"])
    legend = [t.get_text() for t in categories.legends[0].get_texts()]
    assert legend == [
        "all features knocked out (n = 5)",
        "context-dependent (slow-decay) features knocked out (n = 5)",
        "context-independent (fast-decay) features knocked out (n = 5)",
    ]
    assert categories.axes[0].get_ylabel() == "Target still top-1 (%)"
    _assert_written(save_figure(categories, tmp_path / "categories.png"))

    with pytest.raises(ValueError, match="several feature_category values"):
        info_flow_figure(mamba, lines="model")


def test_heatmap_matrix_and_figures(store: ResultsStore, runs: dict[str, str], tmp_path: Path) -> None:
    frame = runs_frame(store, [runs["heat_mamba"], runs["heat_gpt2"]], "heatmap")
    values, labels, p0 = heatmap_matrix(frame[frame["model"] == "state-spaces/mamba-130m-hf"])
    assert p0 == pytest.approx(0.6)
    assert values.shape == (len(TOKENS), 12 - 3 + 1)
    expected = -0.1 * np.arange(len(TOKENS))[:, None] * np.arange(10)[None, :] / 12
    assert values == pytest.approx(expected)
    assert labels == ["<s>", "The", " Eiffel", " Tower", " costs", r" \$5", " in*"]  # '$' would start mathtext

    single = heatmap_figure(store.frame(runs["heat_mamba"]), 7)
    assert [t.get_text() for t in single.axes[0].get_yticklabels()] == labels
    assert "' in'" in single.get_suptitle() and "window size 3" in single.get_suptitle()
    assert "p0 = 0.600" in single.axes[0].get_title()
    _assert_written(save_figure(single, tmp_path / "heatmap"))

    both = heatmap_figure(frame, 7, limit=0.5, x="window")
    panels = [ax for ax in both.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title().split("\n")[0] for ax in panels] == ["state-spaces/mamba-130m-hf", "openai-community/gpt2"]
    assert panels[1].images[0].get_array().shape == (len(TOKENS), 24 - 3 + 1)
    assert panels[0].images[0].get_clim() == (-0.5, 0.5)
    _assert_written(save_figure(both, tmp_path / "heatmaps"))


# --- report ---


def test_report_is_self_contained(store: ResultsStore, runs: dict[str, str], tmp_path: Path) -> None:
    path = write_report(store, list(runs.values()), tmp_path / "out" / "report.html")
    text = path.read_text(encoding="utf-8")
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    # comparisons (1 info-flow, 1 heatmap), mamba and gpt2 runs (diff + hit each), 2 heatmap runs
    assert len(images) == 8
    assert all(base64.b64decode(image)[:4] == b"\x89PNG" for image in images)
    assert not re.search(r"https?://|<script|<link|@import|src=\"(?!data:)", text)
    for run_id in runs.values():
        assert f'id="run-{run_id}"' in text
    assert "subject &#x27;…&#x27; not in prompt" in text or "subject '…' not in prompt" in text
    assert "Strongest effect per source" in text and text.count("<table") >= 7
    assert re.search(r"<th>\s*n_layers</th><td>12</td>", text)  # the manifest's parameters, one per row


def test_report_defaults_to_every_run(store: ResultsStore, runs: dict[str, Any], tmp_path: Path) -> None:
    empty = _start(store, "info_flow", "empty/model", 4)
    text = write_report(store, path=tmp_path / "all.html").read_text(encoding="utf-8")
    assert all(f'id="run-{r}"' in text for r in [*runs.values(), empty])
    assert "No rows yet." in text


def test_report_compares_each_model_once_and_tables_attention_runs(
    store: ResultsStore, runs: dict[str, str], tmp_path: Path
) -> None:
    manifest = Manifest(
        kind="info_flow",
        model_id="state-spaces/mamba-130m-hf",
        model_revision="r1",
        dataset="counterfact",
        dataset_filter="all_correct",
        params={"n_layers": 12, "other": 1},
    )
    second_mamba = store.start_run(manifest).run_id  # a second run of the same model (as the demo makes)
    store.add_rows(second_mamba, _flow_rows(3, 12, 3, ("all",), seed=2))
    attention = _start(store, "attention", "openai-community/gpt2", 24)
    matrix = [[1.0, 0.0], [0.5, 0.5]]
    rows = [
        {"prompt_id": 7, "layer": layer, "feature": feature, "matrix": matrix, "tokens": ["<s>", "Hi"]}
        for layer in (0, 1)
        for feature in ("mean", "0", "1")
    ]
    store.add_rows(attention, rows)
    text = write_report(store, [*runs.values(), second_mamba, attention], tmp_path / "r.html").read_text("utf-8")
    comparison = text.split("<h2>Info flow: models compared</h2>")[1].split("<h2")[0]
    assert comparison.count("<img") == 1  # feature category all, window size 3: mamba and gpt2, once each
    assert "bootstrap interval of the mean" in comparison
    section = text.split(f'id="run-{attention}"')[1]
    assert "Hidden-attention matrices" in section and "<td>0–1 (2)</td>" in section
    assert "<td>&lt;s&gt;Hi</td>" in section


def test_heatmap_marks_the_subject_and_names_the_target(store: ResultsStore, runs: dict[str, str]) -> None:
    evaluated = _start(store, "evaluate", "state-spaces/mamba-130m-hf", 12)
    fact = {"prompt": "The Eiffel Tower costs $5 in", "subject": "Eiffel Tower", "target": " Paris"}
    store.add_rows(evaluated, [{"prompt_id": 7, "p0": 0.6, "rank": 1, "correct": True, **fact}])
    frame = runs_frame(store, [runs["heat_mamba"]], "heatmap")
    figure = heatmap_figure(frame, 7)
    labels = figure.axes[0].get_yticklabels()
    assert [label.get_text() for label in labels if label.get_fontweight() == "bold"] == [" Eiffel", " Tower"]
    assert "target ' Paris'" in figure.get_suptitle() and "subject boxed" in figure.get_suptitle()
    assert figure.axes[0].images[0].get_cmap().name == "RdBu"
    unknown = heatmap_figure(runs_frame(store, [runs["heat_gpt2"]], "heatmap"), 7)  # no fact: no marks
    assert "target" not in unknown.get_suptitle() and "subject" not in unknown.get_suptitle()


def test_every_info_flow_curve_caption_names_its_interval() -> None:
    """The report's curves (by feature category, by window size, by the mixers knocked out) each say how their
    band was computed (the default percentile bootstrap). The rows are one run's (no ``n_layers`` column)."""
    from infoflow.experiments.experiment import FigureBlock, FigureOptions
    from infoflow.experiments.info_flow import mixer_split, report
    from infoflow.plots.aggregate import interval_caption

    frame = pd.DataFrame(_flow_rows(3, 6, 2, ("all", "fast_decay"), seed=0) + _flow_rows(3, 6, 3, ("all",), seed=1))
    split = pd.DataFrame(
        [
            {**row, "model": "hybrid", "mixers": mixers}
            for mixers in ("all", "attention")
            for row in _flow_rows(3, 6, 2, ("all",), 2)
        ]
    )
    blocks = report(frame, FigureOptions()) + mixer_split(split, FigureOptions())
    captions = [block.caption for block in blocks if isinstance(block, FigureBlock)]
    for lines in ("by feature category", "by window size", "by the mixers knocked out"):
        assert any(lines in caption for caption in captions), (lines, captions)
    assert all(interval_caption() in caption for caption in captions), captions
    assert "bootstrap" in interval_caption()
