"""A small results store for the app's tests: info-flow, heatmap and attention runs of built-in models."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from infoflow.data import FactPrompt, load_dataset
from infoflow.data.spans import TokenType
from infoflow.engines.fast import FastEngine
from infoflow.experiments.attention import attention
from infoflow.experiments.heatmap import heatmap
from infoflow.experiments.info_flow import InfoFlowParams, info_flow
from infoflow.experiments.runner import RunContext
from infoflow.interventions.knockout import FeatureCategory
from infoflow.models import load_model
from infoflow.store import ResultsStore

WINDOW = 4
BAD_PROMPT = FactPrompt(99, "a prompt without its subject", "Nobody Here", " x")


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one CPU thread (the tiny built-in models run fastest so on a shared CPU), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_store(path: Path, n_prompts: int = 3) -> dict[str, str]:
    """Runs of builtin-mamba1 and builtin-gpt2 on the first synthetic prompts (one bad prompt recorded as an
    error); returns {name: run_id}."""
    prompts = load_dataset("synthetic")[:n_prompts]
    runs = {}
    with one_thread(), ResultsStore.open(path) as store:
        for name in ("builtin-mamba1", "builtin-gpt2"):
            loaded = load_model(name)
            context = RunContext(loaded, FastEngine(loaded.model), store, "synthetic", "all", show_progress=False)
            categories = tuple(FeatureCategory) if loaded.model.has_decay_features else (FeatureCategory.ALL,)
            params = InfoFlowParams(feature_categories=categories, window_sizes=(WINDOW,))
            short = name.removeprefix("builtin-")
            runs[f"info_flow_{short}"] = info_flow(context, [*prompts, BAD_PROMPT], params)
            runs[f"heatmap_{short}"] = heatmap(context, prompts[:1], WINDOW)
        runs["attention_gpt2"] = attention(context, prompts[:1], None, per_feature=True)
        subject_only = InfoFlowParams(sources=(TokenType.SUBJECT,), window_sizes=(2,))
        runs["info_flow_gpt2_ws2"] = info_flow(context, prompts, subject_only)
    return runs
