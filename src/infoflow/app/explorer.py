"""Explorer page logic: one typed prompt on one model, live: the clean top-k, the heatmap (last ← each
token, every window) and the per-source info-flow curves, with progress.

Knockouts come from the experiments' plans (``heatmap_plan``, ``info_flow_plan``) and run on the
``FastEngine``; rows have the store's columns, so the store's figures and aggregations apply to them.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from infoflow.app.errors import AppError
from infoflow.data.prompts import FactPrompt
from infoflow.data.spans import TokenSpans, TokenType, find_spans
from infoflow.engines.base import TargetScores
from infoflow.engines.fast import FastEngine
from infoflow.experiments.evaluate import clean_probabilities
from infoflow.experiments.heatmap import heatmap_plan, heatmap_rows
from infoflow.experiments.info_flow import InfoFlowParams, info_flow_plan, info_flow_rows
from infoflow.experiments.plans import KnockoutOptions, PlannedKnockout
from infoflow.interventions.knockout import FeatureCategory, default_window_size
from infoflow.models.load import LoadedModel

BUILTIN_MODELS = ("builtin-mamba1", "builtin-mamba2", "builtin-gpt2", "builtin-llama")
DEFAULT_MODEL = BUILTIN_MODELS[0]
DEFAULT_PROMPT = "Thargol Tesbrammon Silwen, as the neighbours say, works as a"
DEFAULT_SOURCES = InfoFlowParams().sources
CAPITALISED_RUN = re.compile(r"[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*")

Progress = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    """The default progress callback: ignore."""


@functools.cache
def known_subjects() -> tuple[str, ...]:
    """Subjects of the synthetic dataset, longest first (to find the subject of a typed prompt)."""
    from infoflow.data import load_dataset

    return tuple(sorted({p.subject for p in load_dataset("synthetic")}, key=len, reverse=True))


def find_subject(prompt: str, known: Sequence[str] | None = None) -> str:
    """The subject of ``prompt``: the longest known subject it contains, else its first run of capitalised
    words (a name). Raises ``AppError`` when neither is there."""
    candidates = known_subjects() if known is None else sorted(known, key=len, reverse=True)
    for subject in candidates:
        if subject and subject in prompt:
            return subject
    match = CAPITALISED_RUN.search(prompt)
    if match is None:
        raise AppError(
            f"subject not found in {prompt!r}: no known subject and no capitalised name; type the subject "
            "(a part of the prompt) in the Subject box"
        )
    return match.group(0)


@dataclass(frozen=True)
class ExplorerRequest:
    prompt: str
    subject: str = ""  # empty: found by find_subject
    target: str = ""  # empty: the model's own top-1 token
    window_size: int | None = None  # default: 9, or half the depth
    top_k: int = 10
    sources: tuple[TokenType, ...] = DEFAULT_SOURCES
    feature_categories: tuple[FeatureCategory, ...] = (FeatureCategory.ALL,)
    options: KnockoutOptions = field(default_factory=KnockoutOptions)
    heatmap: bool = True
    curves: bool = True


@dataclass(frozen=True)
class ExplorerResult:
    fact: FactPrompt
    spans: TokenSpans
    subject_found: bool  # the subject was found, not typed
    target_from_model: bool  # the target is the model's top-1 token, not typed
    tokens: list[str]
    top_k: pd.DataFrame  # rank, token, token_id, p, target
    heatmap_rows: pd.DataFrame  # heatmap table columns (+ model, n_layers)
    curve_rows: pd.DataFrame  # info_flow table columns (+ model, n_layers)
    p0: float
    seconds: float


def clean_top_k(loaded: LoadedModel, spans: TokenSpans, k: int) -> pd.DataFrame:
    """The k most probable next tokens of the clean run, with the target marked."""
    probabilities = clean_probabilities(loaded.model, [spans.input_ids], loaded.model.lm_head.weight.device)[0]
    top = torch.topk(probabilities, min(k, probabilities.shape[0]))
    ids = top.indices.tolist()
    return pd.DataFrame(
        {
            "rank": range(1, len(ids) + 1),
            "token": [repr(loaded.tokenizer.decode([i])) for i in ids],
            "token_id": ids,
            "p": top.values.tolist(),
            "target": [i == spans.target_id for i in ids],
        }
    )


def prompt_spans(loaded: LoadedModel, request: ExplorerRequest) -> tuple[FactPrompt, TokenSpans, bool, bool]:
    """The fact (subject and target filled in) and its token spans; bad prompts raise a clear error."""
    prompt = request.prompt.rstrip()
    if not prompt.strip():
        raise AppError("type a prompt first")
    subject = request.subject.strip() or find_subject(prompt)
    target = request.target
    if not target.strip():
        probe = find_spans(loaded.tokenizer, FactPrompt(0, prompt, subject, " x"))
        top1 = int(clean_top_k(loaded, probe, 1)["token_id"].iloc[0])
        target = loaded.tokenizer.decode([top1])
    fact = FactPrompt(prompt_id=0, prompt=prompt, subject=subject, target=target)
    spans = find_spans(loaded.tokenizer, fact)
    loaded.model.check_length(spans.num_tokens)
    return fact, spans, not request.subject.strip(), not request.target.strip()


def score_plan(
    engine: FastEngine,
    spans: TokenSpans,
    chunks: Sequence[Sequence[PlannedKnockout]],
    progress: Callable[[int], None],
) -> list[tuple[Sequence[PlannedKnockout], TargetScores]]:
    """Every chunk's knockouts on the prompt, one engine call each (clean run first), with their scores."""
    ids = torch.tensor(spans.input_ids)
    scored = []
    for i, chunk in enumerate(chunks):
        scored.append((chunk, engine.scores(ids, spans.target_id, [None, *(k.knockout for k in chunk)])))
        progress(i + 1)
    return scored


def explore(loaded: LoadedModel, request: ExplorerRequest, progress: Progress = no_progress) -> ExplorerResult:
    """Run the explorer's computations for one prompt, reporting progress in [0, 1] with a message."""
    started = time.perf_counter()
    model = loaded.model
    progress(0.0, "tokenizing, finding the subject")
    fact, spans, subject_found, target_from_model = prompt_spans(loaded, request)
    tokens = [loaded.tokenizer.decode([i]) for i in spans.input_ids]
    top = clean_top_k(loaded, spans, request.top_k)
    size = request.window_size or default_window_size(model.n_layers)
    params = InfoFlowParams(
        sources=tuple(request.sources),
        feature_categories=tuple(request.feature_categories),
        window_sizes=(size,),
        options=request.options,
    )
    params.check_model(model)
    engine = FastEngine(model)
    heat_plan = heatmap_plan(spans, model.n_layers, size, request.options) if request.heatmap else []
    heat_chunks = [[k for k in heat_plan if k.key["window_start"] == s] for s in dict.fromkeys(
        k.key["window_start"] for k in heat_plan)]  # fmt: skip
    curve_plan = info_flow_plan(spans, model.n_layers, params) if request.curves else []
    curve_chunks = [[k for k in curve_plan if k.key["source"] == s.value] for s in params.sources] if curve_plan else []
    total = max(1, len(heat_chunks) + len(curve_chunks))
    progress(0.05, "clean run done")

    def report(stage: str, offset: int) -> Callable[[int], None]:
        return lambda done: progress(0.05 + 0.95 * (offset + done) / total, f"{stage}: {offset + done}/{total} steps")

    labels = {"model": loaded.name, "n_layers": model.n_layers, "prompt_id": 0}
    heat = score_plan(engine, spans, heat_chunks, report("heatmap", 0))
    heat_rows = pd.DataFrame(
        [{**labels, **row} for chunk, scores in heat for row in heatmap_rows(chunk, scores, tokens)]
    )
    curves = score_plan(engine, spans, curve_chunks, report("info-flow curves", len(heat_chunks)))
    curve_rows = pd.DataFrame([{**labels, **row} for chunk, scores in curves for row in info_flow_rows(chunk, scores)])
    target_p = float(top.loc[top["target"], "p"].iloc[0]) if top["target"].any() else None
    scored = heat or curves  # every engine call starts with the same clean run
    p0 = scored[0][1].probability[0].item() if scored else (target_p if target_p is not None else float("nan"))
    progress(1.0, "done")
    return ExplorerResult(
        fact=fact,
        spans=spans,
        subject_found=subject_found,
        target_from_model=target_from_model,
        tokens=tokens,
        top_k=top,
        heatmap_rows=heat_rows,
        curve_rows=curve_rows,
        p0=p0,
        seconds=time.perf_counter() - started,
    )
