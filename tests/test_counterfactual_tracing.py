"""Causal tracing with a counterfactual subject: the subject's tokens swapped for another prompt's subject of as
many tokens. The corrupted run must be the model's plain forward pass on the swapped prompt, restorations must
give what they give under noise (the clean p where the whole clean state comes back), both engines agree, and
the donors follow the rules (same length, another subject and target, seeded)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from infoflow.data import load_dataset
from infoflow.data.prompts import FactPrompt
from infoflow.data.spans import TokenSpans, find_spans
from infoflow.engines.fast import FastEngine
from infoflow.engines.reference import ReferenceEngine
from infoflow.experiments.causal_tracing import CausalTracingParams, causal_tracing, counterfactual_donors
from infoflow.experiments.runner import RunContext
from infoflow.interventions.patching import SubjectSwap
from infoflow.models import load_model
from infoflow.models.load import LoadedModel
from infoflow.models.modes import Site
from infoflow.store import ResultsStore
from tests.cli_support import invoke

COUNTERFACTUAL = CausalTracingParams(sites=(Site.RESIDUAL, Site.MLP), corruption="counterfactual")


@pytest.fixture(scope="module")
def llama() -> LoadedModel:
    return load_model("builtin-llama")


@pytest.fixture(scope="module")
def pool(llama: LoadedModel) -> tuple[list[FactPrompt], list[TokenSpans]]:
    """40 synthetic prompts of many people (the dataset lists each person's prompts together) and their spans."""
    prompts = load_dataset("synthetic")[::53][:40]
    return prompts, [find_spans(llama.tokenizer, p) for p in prompts]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultsStore]:
    with ResultsStore.open(tmp_path / "results.duckdb") as s:
        yield s


def context_of(loaded: LoadedModel, store: ResultsStore, reference: bool = False) -> RunContext:
    engine = ReferenceEngine(loaded.model) if reference else FastEngine(loaded.model)
    return RunContext(loaded, engine, store, "synthetic", "test selection", show_progress=False)


def subject_ids(spans: TokenSpans) -> tuple[int, ...]:
    return tuple(spans.input_ids[i] for i in spans.subject)


def test_donors_have_as_many_tokens_another_subject_and_another_target(pool) -> None:
    prompts, spans = pool
    donors = dict(counterfactual_donors(prompts, spans, seed=0))
    by_subject = {subject_ids(s): p for p, s in zip(prompts, spans, strict=True)}  # the donor's prompt
    lengths = Counter(len(s.subject) for s in spans)
    assert donors and all(
        lengths[len(s.subject)] > 1 for p, s in zip(prompts, spans, strict=True) if p.prompt_id in donors
    )
    for prompt, prompt_spans in zip(prompts, spans, strict=True):
        if prompt.prompt_id not in donors:
            continue
        donor = donors[prompt.prompt_id]
        assert len(donor) == len(prompt_spans.subject)
        assert by_subject[donor].subject != prompt.subject and by_subject[donor].target != prompt.target
    assert dict(counterfactual_donors(prompts, spans, seed=0)) == donors  # seeded
    assert dict(counterfactual_donors(prompts, spans, seed=1)) != donors


@pytest.mark.slow
@torch.no_grad()
def test_counterfactual_tracing_against_the_swapped_prompt_and_the_reference(llama, pool, store) -> None:
    """p_corrupted is p(target) of the plain forward pass on the prompt with the donor's subject tokens; restoring
    the last layer's output at the last position gives the clean p0; the reference engine gives the same rows."""
    prompts, spans = pool
    chosen = prompts[:6]
    run_id = causal_tracing(context_of(llama, store), chosen, COUNTERFACTUAL)
    frame = store.frame(run_id)
    donors = dict(counterfactual_donors(chosen, spans[: len(chosen)], seed=0))
    spans_of = {p.prompt_id: s for p, s in zip(chosen, spans, strict=False)}
    traced = sorted(frame.prompt_id.unique())
    assert traced == sorted(donors) and len(traced) >= 2
    for prompt_id in traced:
        prompt_spans = spans_of[prompt_id]
        rows = frame[frame.prompt_id == prompt_id]
        swapped = torch.tensor(prompt_spans.input_ids)
        swapped[list(prompt_spans.subject)] = torch.tensor(donors[prompt_id])
        expected = torch.softmax(llama.model(swapped[None])[0, -1], -1)[prompt_spans.target_id].item()
        assert rows.p_corrupted.iloc[0] == pytest.approx(expected, abs=1e-5)
        last = rows[(rows.site == "residual") & (rows.layer == 7) & (rows.position == prompt_spans.num_tokens - 1)]
        assert last.p.item() == pytest.approx(last.p0.item(), abs=1e-5)
        before = rows[rows.position < prompt_spans.subject.start]
        assert before.empty or before.effect.abs().max() <= 1e-5  # nothing before the subject changed
    assert (frame.groupby("prompt_id").p_corrupted.first() < frame.groupby("prompt_id").p0.first()).all()
    manifest = store.run(run_id).manifest.params
    assert manifest["corruption"] == "counterfactual" and manifest["samples"] == 1 and "noise_std" not in manifest
    reference = store.frame(causal_tracing(context_of(llama, store, reference=True), chosen, COUNTERFACTUAL))
    keys = ["prompt_id", "site", "layer", "position"]
    difference = reference.sort_values(keys).p.to_numpy() - frame.sort_values(keys).p.to_numpy()
    assert abs(difference).max() <= 1e-5


def test_a_prompt_without_a_donor_is_an_error_of_the_run(llama, pool, store) -> None:
    prompts, spans = pool
    lengths = Counter(len(s.subject) for s in spans)
    alone = next(p for p, s in zip(prompts, spans, strict=True) if lengths[len(s.subject)] == 1)
    run_id = causal_tracing(context_of(llama, store), [alone], COUNTERFACTUAL)
    (reason,) = store.frame(run_id, "errors")["reason"]
    assert "no other prompt of the run has a subject of" in reason and "--corruption noise" in reason


def test_swap_offset_and_parameters(llama) -> None:
    ids = torch.tensor([5, 6, 7, 8])
    offset = SubjectSwap((1, 2), (9, 10)).offset(llama.model, ids)
    assert offset.shape == (1, 4, llama.model.embed(ids[None]).shape[-1])
    assert offset[0, [0, 3]].abs().max() == 0 and offset[0, [1, 2]].abs().min() >= 0
    with pytest.raises(ValueError, match="cannot take 1 tokens"):
        SubjectSwap((1, 2), (9,))
    with pytest.raises(ValueError, match="noise or counterfactual"):
        CausalTracingParams(corruption="swap")
    assert CausalTracingParams(samples=10, corruption="counterfactual").samples == 1


def test_the_command_refuses_samples_with_a_counterfactual_subject(tmp_path: Path) -> None:
    args = ["causal-tracing", "--store", str(tmp_path / "s.duckdb"), "--corruption"]
    wrong = [invoke(*args, "counterfactual", "--samples", "3", code=2), invoke(*args, "swap", code=2)]
    messages = [" ".join(result.output.replace("│", " ").split()) for result in wrong]
    assert "leave out --samples" in messages[0] and "noise or counterfactual, not 'swap'" in messages[1]
    assert not (tmp_path / "s.duckdb").exists()  # refused before any work
