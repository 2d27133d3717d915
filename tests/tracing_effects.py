"""Causal tracing at the two sites of factual recall (the subject's last token, the last token) on prompts a
model answers correctly: the indirect effect of restoring the residual stream there, per layer."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from infoflow.data import FactPrompt, find_spans
from infoflow.engines.patching import FastPatchEngine, PatchRequest
from infoflow.experiments.causal_tracing import (
    NOISE_MULTIPLIER,
    CausalTracingParams,
    causal_tracing_plan,
    causal_tracing_rows,
    corruption,
)
from infoflow.experiments.prompt_parts import role
from infoflow.interventions.patching import embedding_std, embedding_width
from infoflow.models import LoadedModel
from infoflow.models.modes import Site

SITES_OF_RECALL = ("subject_last", "last")


def trace_recall_sites(
    loaded: LoadedModel, prompts: Sequence[FactPrompt], n_prompts: int, samples: int = 3
) -> pd.DataFrame:
    """Rows of ``causal_tracing_rows`` (residual stream, window 1) at the subject's last token and the last token
    only, for the first ``n_prompts`` of ``prompts`` whose target is the model's top-1 token; the noise is 3 x
    the std of the embeddings of every subject token of ``prompts`` (ROME's scale)."""
    model, tokenizer = loaded.model, loaded.tokenizer
    all_spans = [find_spans(tokenizer, prompt) for prompt in prompts]
    subject_tokens = [s.input_ids[i] for s in all_spans for i in s.subject]
    std = NOISE_MULTIPLIER * embedding_std(model, subject_tokens)
    params = CausalTracingParams(sites=(Site.RESIDUAL,), samples=samples, noise_std=std)
    engine, width = FastPatchEngine(model), embedding_width(model)
    frames = []
    for prompt, spans in zip(prompts, all_spans, strict=True):
        ids = torch.tensor(spans.input_ids)
        with torch.no_grad():
            logits = model(ids[None])[0, -1]
        if logits.argmax().item() != spans.target_id:
            continue
        plan = [
            k
            for k in causal_tracing_plan(spans, model.n_layers, params)
            if role(spans, int(k.key["position"])) in SITES_OF_RECALL
        ]
        noise = corruption(spans, prompt, params).noise(spans.num_tokens, width)
        clean = torch.softmax(logits, -1)[spans.target_id].item()
        scores = engine.scores(PatchRequest(ids, spans.target_id, [None, *(k.patch for k in plan)], noise))
        tokens = [tokenizer.decode([i]) for i in spans.input_ids]
        rows = causal_tracing_rows(plan, scores, clean, tokens, spans)
        frames.append(pd.DataFrame(rows).assign(prompt=prompt.prompt_id))
        if len(frames) == n_prompts:
            break
    return pd.concat(frames, ignore_index=True)


def band_effects(rows: pd.DataFrame, layers: range) -> dict[str, float]:
    """Mean indirect effect per site of recall (subject_last, last) over ``layers`` and prompts."""
    band = rows[rows["layer"].isin(layers)]
    return band.groupby("role")["effect"].mean().reindex(list(SITES_OF_RECALL)).to_dict()
