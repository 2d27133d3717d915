"""Experiments from Python: evaluate, info-flow, heatmap and attention on the built-in models, checked against
independent computations (the model's own forward pass, the reference engine on the same knockout)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from infoflow.data import load_dataset
from infoflow.data.prompts import FactPrompt
from infoflow.data.spans import TokenSpans, TokenType, find_spans
from infoflow.engines.base import Engine
from infoflow.engines.fast import FastEngine
from infoflow.engines.reference import ReferenceEngine
from infoflow.experiments.attention import attention
from infoflow.experiments.evaluate import evaluate
from infoflow.experiments.heatmap import heatmap
from infoflow.experiments.info_flow import InfoFlowParams, info_flow
from infoflow.experiments.plans import KnockoutOptions, relative_change
from infoflow.experiments.runner import RunContext
from infoflow.interventions.knockout import FeatureCategory, FeatureSelection, Knockout, KnockoutMode
from infoflow.models import load_model
from infoflow.models.load import LoadedModel
from infoflow.plots.heatmap import heatmap_matrix
from infoflow.store import ResultsStore, RunStatus

PROMPT_IDS = (0, 14, 28, 76)  # different lengths; subject first (0, 76) and after some context (14, 28)
WINDOW = 3  # 8 layers: window starts 0..5
# Mamba's hidden attention is materialised per layer ([features, T, T, state]): short prompts keep it cheap
SHORT = FactPrompt(
    prompt_id=9000,
    prompt="Thargol Tesbrammon Silwen was born in",
    subject="Thargol Tesbrammon Silwen",
    target=" Tornhal",
)


@pytest.fixture(scope="module")
def prompts() -> list[FactPrompt]:
    by_id = {p.prompt_id: p for p in load_dataset("synthetic")}
    return [by_id[i] for i in PROMPT_IDS]


@pytest.fixture(scope="module")
def mamba() -> LoadedModel:
    return load_model("builtin-mamba1")


@pytest.fixture(scope="module")
def gpt2() -> LoadedModel:
    return load_model("builtin-gpt2")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultsStore]:
    with ResultsStore.open(tmp_path / "results.duckdb") as s:
        yield s


def context_of(loaded: LoadedModel, store: ResultsStore, engine: Engine | None = None) -> RunContext:
    engine = engine if engine is not None else FastEngine(loaded.model)
    return RunContext(loaded, engine, store, "synthetic", "test selection", show_progress=False)


@torch.no_grad()
def own_probabilities(loaded: LoadedModel, spans: TokenSpans) -> torch.Tensor:
    """Next-token distribution of one prompt from the model's own (unbatched, unpadded) forward pass."""
    logits = loaded.model(torch.tensor([spans.input_ids]))
    return torch.softmax(logits[0, -1].double(), dim=-1)


def reference_scores(loaded: LoadedModel, spans: TokenSpans, knockouts: Sequence[Knockout | None]) -> pd.DataFrame:
    scores = ReferenceEngine(loaded.model).scores(torch.tensor(spans.input_ids), spans.target_id, list(knockouts))
    return pd.DataFrame({"p": scores.probability.double().numpy(), "hit": scores.top1.numpy()})


# --- evaluate ---


@pytest.mark.parametrize("name", ["mamba", "gpt2"])
def test_evaluate_matches_the_models_own_forward(
    name: str, request: pytest.FixtureRequest, store: ResultsStore, prompts: list[FactPrompt]
) -> None:
    loaded: LoadedModel = request.getfixturevalue(name)
    prompts = prompts[:3]
    run_id = evaluate(context_of(loaded, store), prompts, top_k=3)  # one padded batch of different lengths
    frame = store.frame(run_id).set_index("prompt_id")
    assert sorted(frame.index) == sorted(p.prompt_id for p in prompts)
    assert len({find_spans(loaded.tokenizer, p).num_tokens for p in prompts}) > 1  # padding is exercised
    for prompt in prompts:
        spans = find_spans(loaded.tokenizer, prompt)
        row = frame.loc[prompt.prompt_id]
        probabilities = own_probabilities(loaded, spans)
        target_id = loaded.tokenizer(prompt.target, add_special_tokens=False)["input_ids"][0]
        assert row["target_token_id"] == target_id
        assert row["target_token"] == loaded.tokenizer.decode([target_id])
        assert row["p0"] == pytest.approx(float(probabilities[target_id]), abs=1e-6)
        order = torch.argsort(probabilities, descending=True).tolist()
        assert row["rank"] == order.index(target_id) + 1
        assert bool(row["correct"]) == (order[0] == target_id) == (row["rank"] == 1)
        top = json.loads(row["top_tokens"])
        assert [t[0] for t in top] == order[:3]
        assert [t[1] for t in top] == [loaded.tokenizer.decode([i]) for i in order[:3]]
        assert [t[2] for t in top] == pytest.approx([float(probabilities[i]) for i in order[:3]], abs=1e-5)
        assert (row["prompt"], row["subject"], row["target"]) == (prompt.prompt, prompt.subject, prompt.target)
    assert store.run(run_id).status is RunStatus.COMPLETE


# --- info-flow ---


def expected_knockout(
    spans: TokenSpans, target: str, source: str, start: int, size: int, **options: object
) -> Knockout:
    """The knockout an info-flow row stands for, built here from the DESIGN's token types."""
    last = spans.num_tokens - 1
    subject = list(spans.subject)
    positions = {
        "last": [last],
        "subject": subject,
        "relation": [i for i in range(spans.num_tokens) if i not in subject],
        "first": [0],
        "context": list(range(subject[0])),
    }
    return Knockout.between(positions[target], positions[source], range(start, start + size), **options)  # type: ignore[arg-type]


def check_rows_against_reference(
    loaded: LoadedModel, prompt: FactPrompt, rows: pd.DataFrame, **options: object
) -> None:
    """p, p0, diff and hit of info-flow rows of one prompt against the reference engine on the same knockouts."""
    spans = find_spans(loaded.tokenizer, prompt)
    knockouts = [
        expected_knockout(
            spans,
            r.target,
            r.source,
            r.window_start,
            r.window_size,
            features=FeatureSelection(FeatureCategory(r.feature_category), exempt_fraction=0.25),
            **options,
        )
        for r in rows.itertuples()
    ]
    reference = reference_scores(loaded, spans, [None, *knockouts])
    p0 = reference["p"][0]
    assert rows["p0"].to_numpy() == pytest.approx(np.full(len(rows), p0), abs=1e-6)
    assert rows["p"].to_numpy() == pytest.approx(reference["p"][1:].to_numpy(), abs=1e-5)
    assert rows["diff"].to_numpy() == pytest.approx(((rows["p"] - p0) / p0 * 100).to_numpy(), abs=1e-3)
    assert list(rows["hit"]) == list(reference["hit"][1:])


def test_info_flow_rows_match_the_reference_engine(
    gpt2: LoadedModel, store: ResultsStore, prompts: list[FactPrompt]
) -> None:
    chosen = prompts[:2]
    params = InfoFlowParams(
        sources=(TokenType.SUBJECT, TokenType.RELATION, TokenType.FIRST, TokenType.LAST), window_sizes=(5, 8)
    )
    run_id = info_flow(context_of(gpt2, store), chosen, params)
    frame = store.frame(run_id)
    n_windows = {5: 8 - 5 + 1, 8: 1}
    assert len(frame) == len(chosen) * 4 * sum(n_windows.values())
    keys = ["prompt_id", "target", "source", "feature_category", "window_size", "window_start"]
    assert not frame.duplicated(keys).any()
    for size, count in n_windows.items():
        starts = frame[frame["window_size"] == size].groupby(["prompt_id", "source"])["window_start"].agg(list)
        assert all(sorted(s) == list(range(count)) for s in starts)
    for prompt in chosen:  # every row against the reference engine on the same knockout
        rows = frame[frame["prompt_id"] == prompt.prompt_id].reset_index(drop=True)
        check_rows_against_reference(gpt2, prompt, rows)
        assert (rows["p"] - rows["p0"]).abs().max() > 1e-4  # knockouts change p: the rows are not all p0
    assert store.run(run_id).manifest.params["n_layers"] == 8


def test_info_flow_on_mamba_matches_the_reference_engine(mamba: LoadedModel, store: ResultsStore) -> None:
    prompt = SHORT
    params = InfoFlowParams(sources=(TokenType.SUBJECT, TokenType.LAST), window_sizes=(4,))
    run_id = info_flow(context_of(mamba, store), [prompt], params)
    frame = store.frame(run_id)
    assert len(frame) == 2 * 5
    assert set(zip(frame["source"], frame["window_start"], strict=True)) == {
        (s, w) for s in ("subject", "last") for w in range(5)
    }
    check_rows_against_reference(mamba, prompt, frame)


def test_info_flow_mamba_modes_and_feature_categories(mamba: LoadedModel, store: ResultsStore) -> None:
    prompt = SHORT
    categories = tuple(FeatureCategory)
    options = KnockoutOptions(mode=KnockoutMode.ZERO_DELTA, strict=True, exempt_fraction=0.25)
    params = InfoFlowParams(
        sources=(TokenType.SUBJECT,), feature_categories=categories, window_sizes=(8,), options=options
    )
    run_id = info_flow(context_of(mamba, store), [prompt], params)
    rows = store.frame(run_id)
    assert sorted(rows["feature_category"]) == sorted(c.value for c in categories)
    check_rows_against_reference(mamba, prompt, rows, mode=KnockoutMode.ZERO_DELTA, strict=True)
    assert rows["p"].nunique() == len(categories)  # exempting different features changes p
    params_record = store.run(run_id).manifest.params
    assert params_record["mode"] == "zero-delta" and params_record["strict"] is True
    assert params_record["exempt_fraction"] == 0.25
    assert params_record["feature_categories"] == [c.value for c in categories]


def test_info_flow_records_prompt_errors_and_goes_on(
    gpt2: LoadedModel, store: ResultsStore, prompts: list[FactPrompt]
) -> None:
    missing = FactPrompt(prompt_id=999, prompt="Nobody lives in", subject="Somebody", target=" Tornhal")
    long = FactPrompt(prompt_id=998, prompt="Tornhal " * 200 + "is in", subject="Tornhal", target=" Tornhal")
    params = InfoFlowParams(sources=(TokenType.SUBJECT,), window_sizes=(WINDOW,))
    run_id = info_flow(context_of(gpt2, store), [missing, prompts[0], long], params)
    errors = store.frame(run_id, "errors").set_index("prompt_id")["reason"]
    assert set(errors.index) == {missing.prompt_id, long.prompt_id}
    assert "Somebody" in errors[missing.prompt_id]
    assert "at most 128" in errors[long.prompt_id]
    assert set(store.frame(run_id)["prompt_id"]) == {prompts[0].prompt_id}
    (run,) = store.runs().itertuples()
    assert (run.status, run.n_done, run.n_errors) == ("complete", 1, 2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (InfoFlowParams(feature_categories=(FeatureCategory.FAST_DECAY,), window_sizes=(2,)), "supported by no layer"),
        (
            InfoFlowParams(feature_categories=(FeatureCategory.ALL, FeatureCategory.SLOW_DECAY), window_sizes=(2,)),
            "feature category 'slow_decay' is supported by no layer",
        ),
        (
            InfoFlowParams(options=KnockoutOptions(mode=KnockoutMode.ZERO_DELTA), window_sizes=(2,)),
            "knockout mode 'zero-delta' is supported by no layer",
        ),
        (InfoFlowParams(options=KnockoutOptions(strict=True), window_sizes=(2,)), "strict .* supported by no layer"),
        (InfoFlowParams(window_sizes=(9,)), "window size 9 is larger than the model's 8 layers"),
        (InfoFlowParams(window_sizes=(0,)), "window size must be >= 1"),
    ],
)
def test_info_flow_refuses_what_the_model_cannot_run(
    gpt2: LoadedModel, store: ResultsStore, prompts: list[FactPrompt], params: InfoFlowParams, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        info_flow(context_of(gpt2, store), prompts[:1], params)
    assert store.runs().empty  # refused before a run was created


@pytest.mark.parametrize(
    "build",
    [
        lambda: InfoFlowParams(sources=()),
        lambda: InfoFlowParams(targets=()),
        lambda: InfoFlowParams(window_sizes=()),
        lambda: InfoFlowParams(feature_categories=()),
        lambda: KnockoutOptions(exempt_fraction=1.5),
    ],
)
def test_parameter_errors(build: object) -> None:
    with pytest.raises(ValueError, match=r"at least one|exempt fraction"):
        build()  # type: ignore[operator]


def test_relative_change() -> None:
    assert relative_change(0.25, 0.5) == -50.0
    assert relative_change(0.75, 0.5) == 50.0
    assert relative_change(0.5, 0.5) == 0.0
    assert np.isnan(relative_change(0.1, 0.0))


class CountingEngine(FastEngine):
    """A fast engine that counts its calls, and can fail on a given call."""

    def __init__(self, loaded: LoadedModel, fail_on: int | None = None, error: type[BaseException] = RuntimeError):
        super().__init__(loaded.model)
        self.calls, self.fail_on, self.error = 0, fail_on, error

    def scores_many(self, requests):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == self.fail_on:
            raise self.error("stop here")
        return super().scores_many(requests)


def test_info_flow_resumes_after_a_failure_and_rerun_adds_nothing(
    gpt2: LoadedModel, tmp_path: Path, prompts: list[FactPrompt]
) -> None:
    prompts = prompts[:3]
    params = InfoFlowParams(sources=(TokenType.SUBJECT, TokenType.LAST), window_sizes=(WINDOW,))
    with ResultsStore.open(tmp_path / "once.duckdb") as once:
        expected = once.frame(info_flow(context_of(gpt2, once), prompts, params))
    with ResultsStore.open(tmp_path / "resumed.duckdb") as resumed:
        failing = CountingEngine(gpt2, fail_on=3)
        with pytest.raises(RuntimeError, match="stop here"):
            info_flow(context_of(gpt2, resumed, failing), prompts, params, chunk_size=1)
        (run,) = resumed.runs().itertuples()
        assert run.status == "partial" and run.n_done == 2
        assert len(resumed.frame(run.run_id)) == 2 * len(expected) // len(prompts)
        engine = CountingEngine(gpt2)
        assert info_flow(context_of(gpt2, resumed, engine), prompts, params, chunk_size=1) == run.run_id
        assert engine.calls == 1  # only the prompt left
        final = resumed.frame(run.run_id)
        assert resumed.run(run.run_id).status is RunStatus.COMPLETE
        again = CountingEngine(gpt2)
        info_flow(context_of(gpt2, resumed, again), prompts, params)
        assert again.calls == 0
        assert resumed.frame(run.run_id).equals(final)
    keys = ["prompt_id", "target", "source", "feature_category", "window_size", "window_start"]
    assert final[keys].equals(expected[keys])
    for column in ("p", "diff", "p0"):
        assert final[column].to_numpy() == pytest.approx(expected[column].to_numpy(), abs=1e-6)
    assert list(final["hit"]) == list(expected["hit"])


# --- heatmap ---


@pytest.mark.parametrize(
    ("name", "size", "checked"),
    [("gpt2", 4, None), ("mamba", 8, [(0, 0), (5, 0), (9, 0)])],
)
def test_heatmap_grid_and_values(
    name: str,
    size: int,
    checked: list[tuple[int, int]] | None,
    request: pytest.FixtureRequest,
    store: ResultsStore,
    prompts: list[FactPrompt],
) -> None:
    """positions x windows of p - p0; every cell (gpt2) or some (Mamba, whose reference engine is slow) against
    the reference engine."""
    loaded: LoadedModel = request.getfixturevalue(name)
    chosen = prompts[1:3] if name == "gpt2" else [SHORT]
    run_id = heatmap(context_of(loaded, store), chosen, size)
    frame = store.frame(run_id)
    n_windows = 8 - size + 1
    assert set(frame["prompt_id"]) == {p.prompt_id for p in chosen}
    for prompt in chosen:
        spans = find_spans(loaded.tokenizer, prompt)
        rows = frame[frame["prompt_id"] == prompt.prompt_id]
        assert len(rows) == spans.num_tokens * n_windows
        matrix, labels, p0 = heatmap_matrix(rows)
        assert matrix.shape == (spans.num_tokens, n_windows)  # positions x windows
        assert not np.isnan(matrix).any()
        tokens = rows.drop_duplicates("position").sort_values("position")["token"].tolist()
        assert tokens == [loaded.tokenizer.decode([i]) for i in spans.input_ids]
        assert labels[-1].endswith("*")
        assert np.abs(matrix).max() > 1e-4
    prompt = chosen[0]
    spans = find_spans(loaded.tokenizer, prompt)
    matrix, _, p0 = heatmap_matrix(frame[frame["prompt_id"] == prompt.prompt_id])
    last = spans.num_tokens - 1
    everything = [(i, w) for i in range(spans.num_tokens) for w in range(n_windows)]
    cells = everything if checked is None else [(min(i, last), w) for i, w in checked]
    knockouts = [Knockout.between([last], [i], range(w, w + size)) for i, w in cells]
    reference = reference_scores(loaded, spans, [None, *knockouts])
    assert p0 == pytest.approx(reference["p"][0], abs=1e-6)
    expected = reference["p"][1:].to_numpy() - reference["p"][0]
    assert [matrix[i, w] for i, w in cells] == pytest.approx(expected, abs=1e-5)  # the plotted value is p - p0
    params = store.run(run_id).manifest.params
    assert params["window_size"] == size and params["mode"] == "zero-attention"


def test_heatmap_refuses_mamba_options_on_attention(gpt2: LoadedModel, store: ResultsStore, prompts: list) -> None:
    with pytest.raises(ValueError, match="supported by no layer"):
        heatmap(context_of(gpt2, store), prompts[:1], WINDOW, KnockoutOptions(strict=True))
    with pytest.raises(ValueError, match="larger than the model"):
        heatmap(context_of(gpt2, store), prompts[:1], 12)
    assert store.runs().empty


# --- attention ---


@pytest.mark.parametrize("name", ["mamba", "gpt2"])
def test_attention_export(
    name: str, request: pytest.FixtureRequest, store: ResultsStore, prompts: list[FactPrompt]
) -> None:
    loaded: LoadedModel = request.getfixturevalue(name)
    prompt = prompts[0]
    run_id = attention(context_of(loaded, store), [prompt], layers=[0, 5], per_feature=True)
    computation = {"n_layers": 8, "engine": "fast", "dtype": "float32", "device": "cpu"}  # part of the identity
    assert store.run(run_id).manifest.params == {"layers": [0, 5], "per_feature": True, **computation}
    frame = store.frame(run_id)
    spans = find_spans(loaded.tokenizer, prompt)
    ids = torch.tensor([spans.input_ids])
    for layer in (0, 5):
        rows = frame[frame["layer"] == layer].set_index("feature")
        with torch.no_grad():
            matrices = loaded.model.hidden_attention(ids, layer)[0]  # [F, T, T]
        assert len(rows) == 1 + matrices.shape[0]
        mean = np.array([np.asarray(r) for r in rows.loc["mean", "matrix"]])
        assert mean.shape == (spans.num_tokens, spans.num_tokens)
        assert mean == pytest.approx(matrices.mean(0).numpy(), abs=1e-5)
        assert np.triu(mean, 1) == pytest.approx(np.zeros_like(mean))  # causal: nothing from later positions
        feature = np.array([np.asarray(r) for r in rows.loc["1", "matrix"]])
        assert feature == pytest.approx(matrices[1].numpy(), abs=1e-5)
        if not loaded.model.has_decay_features:
            assert mean.sum(1) == pytest.approx(np.ones(spans.num_tokens), abs=1e-5)  # softmax rows
        assert list(rows.loc["mean", "tokens"]) == [loaded.tokenizer.decode([i]) for i in spans.input_ids]
    assert set(frame["layer"]) == {0, 5}


def test_attention_refuses_missing_layers(gpt2: LoadedModel, store: ResultsStore, prompts: list) -> None:
    with pytest.raises(ValueError, match=r"layers \[8, -1\] do not exist"):
        attention(context_of(gpt2, store), prompts[:1], layers=[0, 8, -1])
    assert store.runs().empty
