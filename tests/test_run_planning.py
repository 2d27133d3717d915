"""What a real run does around the engine: a chunk's knockouts are planned once, plans are shared between prompts
whose token types lie at the same positions, and they are the knockouts the sweep defines."""

from __future__ import annotations

import types

import pytest
import torch

from infoflow.data.prompts import FactPrompt
from infoflow.data.spans import PromptError, TokenSpans, TokenType
from infoflow.engines.fast import FastEngine
from infoflow.experiments.info_flow import InfoFlowParams, info_flow_plan
from infoflow.experiments.jobs import knockout_job
from infoflow.interventions.knockout import FeatureCategory, FeatureSelection, Knockout, window
from tests.conftest import TINY_VOCAB

PARAMS = InfoFlowParams(feature_categories=(FeatureCategory.ALL, FeatureCategory.FAST_DECAY), window_sizes=(1, 3))


def spans(n_tokens: int, subject: range, first_id: int = 1) -> TokenSpans:
    return TokenSpans(tuple(range(first_id, first_id + n_tokens)), subject, target_id=0)


def test_plans_are_the_sweeps_knockouts_and_shared_by_prompts_at_the_same_positions():
    prompt = spans(7, range(2, 4))
    plan = info_flow_plan(prompt, 4, PARAMS)
    expected = [
        Knockout.between(
            prompt.positions(target),
            prompt.positions(source),
            window(start, size, 4),
            features=FeatureSelection(category=category),
        )
        for target in PARAMS.targets
        for source in PARAMS.sources
        for category in PARAMS.feature_categories
        for size in PARAMS.window_sizes
        for start in range(4 - size + 1)
    ]
    assert [planned.knockout for planned in plan] == expected
    assert plan[0].key == {"target": "last", "source": "subject", "feature_category": "all", "window_size": 1,
                           "window_start": 0}  # fmt: skip
    same_positions = info_flow_plan(spans(7, range(2, 4), first_id=20), 4, PARAMS)  # other tokens
    assert all(a is b for a, b in zip(plan, same_positions, strict=True))
    assert same_positions is not plan  # a list of its own
    assert info_flow_plan(spans(7, range(1, 4)), 4, PARAMS)[0].knockout.edges == ((6, 1), (6, 2), (6, 3))


def test_a_prompt_without_a_needed_token_type_is_refused():
    with pytest.raises(PromptError, match="no relation tokens"):
        info_flow_plan(spans(3, range(0, 3)), 4, InfoFlowParams(sources=(TokenType.RELATION,)))


def test_a_chunk_is_planned_once_for_its_memory_need_and_its_run(tiny_model_factory):
    model = tiny_model_factory("mamba")
    engine = FastEngine(model)
    context = types.SimpleNamespace(engine=engine, loaded=types.SimpleNamespace(model=model))
    planned = []

    def plan_of(prompt_spans: TokenSpans):
        planned.append(prompt_spans)
        return info_flow_plan(prompt_spans, model.n_layers, PARAMS)

    def rows_of(prompt, prompt_spans, plan, scores):
        return [{"p": float(p)} for p in scores.probability]

    job = knockout_job(context, plan_of, rows_of)
    chunk = [(FactPrompt(i, "x", "x", " y"), spans(5 + i, range(1, 3))) for i in range(3)]
    chunk = [(prompt, TokenSpans(tuple(t % TINY_VOCAB for t in s.input_ids), s.subject, 0)) for prompt, s in chunk]
    assert job.needs(chunk) > 0
    results = job(chunk)
    assert len(planned) == 3
    assert [len(rows) for rows in results] == [1 + len(info_flow_plan(s, model.n_layers, PARAMS)) for _, s in chunk]
    planned.clear()
    job(chunk[1:])  # another chunk: planned again
    assert len(planned) == 2
    reference = engine.scores_many([(torch.tensor(s.input_ids), 0, [None]) for _, s in chunk])
    assert [rows[0]["p"] for rows in results] == [float(r.probability[0]) for r in reference]
