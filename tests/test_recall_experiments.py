"""Sublayer knockout, causal tracing and vocabulary projection as experiments on the built-in models: their rows
against independent computations (the model's own modules by hand, the reference engine, what a restoration
must give), resumed runs, and errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from infoflow.data import load_dataset
from infoflow.data.prompts import FactPrompt
from infoflow.data.spans import find_spans
from infoflow.engines.fast import FastEngine
from infoflow.engines.reference import ReferenceEngine
from infoflow.experiments.causal_tracing import CausalTracingParams, causal_tracing, window_around
from infoflow.experiments.prompt_parts import role
from infoflow.experiments.runner import RunContext
from infoflow.experiments.sublayer_knockout import SublayerKnockoutParams, sublayer_knockout
from infoflow.experiments.vocab_projection import VocabProjectionParams, attribute_ids, vocab_projection
from infoflow.interventions.patching import Patch as PatchSpec
from infoflow.interventions.patching import embedding_std, layer_patches
from infoflow.models import load_model
from infoflow.models.load import LoadedModel
from infoflow.models.modes import Site
from infoflow.store import ResultsStore

PROMPT_IDS = (0, 14)


@pytest.fixture(scope="module")
def prompts() -> list[FactPrompt]:
    by_id = {p.prompt_id: p for p in load_dataset("synthetic")}
    return [by_id[i] for i in PROMPT_IDS]


@pytest.fixture(scope="module")
def llama() -> LoadedModel:
    return load_model("builtin-llama")


@pytest.fixture(scope="module")
def mamba() -> LoadedModel:
    return load_model("builtin-mamba1")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultsStore]:
    with ResultsStore.open(tmp_path / "results.duckdb") as s:
        yield s


def context_of(loaded: LoadedModel, store: ResultsStore, reference: bool = False) -> RunContext:
    engine = ReferenceEngine(loaded.model) if reference else FastEngine(loaded.model)
    return RunContext(loaded, engine, store, "synthetic", "test selection", show_progress=False)


@torch.no_grad()
def patched_probability(loaded: LoadedModel, ids: list[int], target: int, patch: PatchSpec) -> float:
    """p(target) with the patch applied by hand, layer by layer, on the plain forward."""
    model = loaded.model
    hidden = model.stream_from(model.embed(torch.tensor([ids])), dict(layer_patches(model, patch, len(ids))))[-1]
    return torch.softmax(model.unembed(hidden)[0, -1], dim=-1)[target].item()


# --- sublayer knockout ---


def test_sublayer_knockout_rows_and_resume(llama: LoadedModel, store: ResultsStore, prompts: list) -> None:
    params = SublayerKnockoutParams(window_sizes=(3,))
    run_id = sublayer_knockout(context_of(llama, store), prompts, params)
    frame = store.frame(run_id)
    assert len(frame) == len(prompts) * 2 * 6  # sites x window starts 0..5
    spans = find_spans(llama.tokenizer, prompts[0])
    row = frame[(frame.prompt_id == prompts[0].prompt_id) & (frame.site == "mlp") & (frame.window_start == 2)]
    last = spans.num_tokens - 1
    expected = patched_probability(
        llama, list(spans.input_ids), spans.target_id, PatchSpec(Site.MLP, (2, 3, 4), (last,))
    )
    assert row.p.item() == pytest.approx(expected, abs=1e-5)
    assert row["diff"].item() == pytest.approx((expected - row.p0.item()) / row.p0.item() * 100, abs=1e-3)
    assert sublayer_knockout(context_of(llama, store), prompts, params) == run_id  # resumed: nothing added
    assert len(store.frame(run_id)) == len(frame)


def test_sublayer_knockout_refuses_what_the_model_lacks(mamba: LoadedModel, store: ResultsStore, prompts) -> None:
    with pytest.raises(ValueError, match="have no MLP"):
        sublayer_knockout(context_of(mamba, store), prompts, SublayerKnockoutParams(window_sizes=(3,)))
    with pytest.raises(ValueError, match="zeroes the mixer's or the MLP's update, not residual"):
        SublayerKnockoutParams(sites=(Site.RESIDUAL,))
    with pytest.raises(ValueError, match="window size 9 is larger"):
        sublayer_knockout(context_of(mamba, store), prompts, SublayerKnockoutParams(sites=(Site.MIXER,)))


# --- causal tracing ---


@pytest.mark.slow
def test_causal_tracing_grid_and_what_restorations_must_give(mamba: LoadedModel, store: ResultsStore, prompts):
    """Restoring the last layer's output at the last position gives the clean p0; restoring anything before the
    subject gives the corrupted p; fast and reference engines agree."""
    params = CausalTracingParams(sites=(Site.RESIDUAL, Site.MIXER), samples=2)
    run_id = causal_tracing(context_of(mamba, store), prompts[:1], params)
    frame = store.frame(run_id)
    spans = find_spans(mamba.tokenizer, prompts[0])
    assert len(frame) == 2 * mamba.model.n_layers * spans.num_tokens
    last_output = frame[(frame.site == "residual") & (frame.layer == 7) & (frame.position == spans.num_tokens - 1)]
    assert last_output.p.item() == pytest.approx(last_output.p0.item(), abs=1e-5)
    before = frame[frame.position < spans.subject.start]
    assert len(before) and before.effect.abs().max() <= 1e-5
    assert frame.p_corrupted.iloc[0] < frame.p0.iloc[0]  # the noise hides the fact
    tokens = [mamba.tokenizer.decode([i]) for i in spans.input_ids]
    assert frame.groupby("position").token.first().tolist() == tokens
    run = store.run(run_id)
    std = 3 * embedding_std(mamba.model, list(spans.input_ids[spans.subject.start : spans.subject.stop]))
    assert run.manifest.params["noise_std"] == pytest.approx(std)
    reference = store.frame(causal_tracing(context_of(mamba, store, reference=True), prompts[:1], params))
    assert (reference.p - frame.p).abs().max() <= 1e-5


def test_window_around_and_roles() -> None:
    assert window_around(0, 10, 8) == tuple(range(0, 5))
    assert window_around(5, 10, 8) == tuple(range(0, 8))
    assert window_around(3, 1, 8) == (3,)
    assert window_around(3, 2, 8) == (2, 3)


def test_roles_name_the_parts_of_the_prompt(llama: LoadedModel, prompts) -> None:
    spans = find_spans(llama.tokenizer, prompts[1])  # subject after some context
    roles = [role(spans, i) for i in range(spans.num_tokens)]
    assert roles[0] == "before" and roles[-1] == "last"
    assert roles[spans.subject.start] == "subject_first" and roles[spans.subject.stop - 1] == "subject_last"
    assert roles[spans.subject.stop] == "first_after"


# --- vocabulary projection ---


def test_vocab_projection_matches_a_hand_computation(llama: LoadedModel, store: ResultsStore, prompts) -> None:
    run_id = vocab_projection(context_of(llama, store), prompts, VocabProjectionParams(top_k=5))
    frame = store.frame(run_id)
    model = llama.model
    spans = find_spans(llama.tokenizer, prompts[0])
    ids = torch.tensor([spans.input_ids])
    with torch.no_grad():
        stream = model.residual_stream(ids)
        position = spans.subject.stop - 1
        for layer in (0, 5):
            block = model.block(layer)
            update = block.mixer(block.mixer_norm(stream[layer]))  # [1, T, D]
            mlp = block.mlp(block.mlp_norm(stream[layer] + update))
            for site, value in ((Site.RESIDUAL, stream[layer + 1]), (Site.MIXER, update), (Site.MLP, mlp)):
                probabilities = torch.softmax(model.lm_head(model.final_norm(value[0, position])), dim=-1)
                row = frame[
                    (frame.prompt_id == prompts[0].prompt_id)
                    & (frame.position_role == "subject_last")
                    & (frame.site == site.value)
                    & (frame.layer == layer)
                ]
                assert row.target_p.item() == pytest.approx(probabilities[spans.target_id].item(), abs=1e-6)
                top = [t for t, _, _ in json.loads(row.top_tokens.item())]
                assert top == torch.topk(probabilities, 5).indices.tolist()
                attributes = attribute_ids(llama.tokenizer, prompts[0])
                assert row.attribute_share.item() == sum(t in attributes for t in top) / 5
        own = torch.softmax(model(ids)[0, -1], dim=-1)[spans.target_id].item()
    final = frame[(frame.prompt_id == prompts[0].prompt_id) & (frame.position_role == "last")]
    final = final[(final.site == "residual") & (final.layer == model.n_layers - 1)]
    assert final.target_p.item() == pytest.approx(own, abs=1e-6)
    assert final.target_top1.item() == (final.target_rank.item() == 1)


def test_attributes_come_from_the_dataset_or_the_target(llama: LoadedModel) -> None:
    plain = FactPrompt(1, "The capital of France is", "France", " Paris")
    listed = FactPrompt(2, "The capital of France is", "France", " Paris", extras={"attributes": "wine; Louvre"})
    tokenizer = llama.tokenizer
    assert attribute_ids(tokenizer, plain) == frozenset(tokenizer(" Paris", add_special_tokens=False)["input_ids"])
    expected = {*tokenizer(" wine", add_special_tokens=False)["input_ids"]}
    expected |= set(tokenizer(" Louvre", add_special_tokens=False)["input_ids"])
    assert attribute_ids(tokenizer, listed) == frozenset(expected)


def test_vocab_projection_leaves_out_the_mlp_of_mamba(mamba: LoadedModel, store: ResultsStore, prompts) -> None:
    with pytest.raises(ValueError, match="have no MLP"):
        vocab_projection(context_of(mamba, store), prompts, VocabProjectionParams())
    run_id = vocab_projection(
        context_of(mamba, store), prompts, VocabProjectionParams(sites=(Site.RESIDUAL, Site.MIXER))
    )
    assert len(store.frame(run_id)) == len(prompts) * 2 * 2 * mamba.model.n_layers  # roles x sites x layers
