"""infoflow: trace how factual information flows through language models by knockout.

The public API, imported on first use (``import infoflow`` itself loads no torch)::

    import infoflow

    loaded = infoflow.load_model("builtin-mamba1")
    prompts = infoflow.load_dataset("synthetic")
    spans = infoflow.find_spans(loaded.tokenizer, prompts[0])
    knockout = infoflow.Knockout.between([spans.num_tokens - 1], spans.positions("subject"), range(2, 8))
    scores = infoflow.FastEngine(loaded.model).scores(torch.tensor(spans.input_ids), spans.target_id, [None, knockout])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from infoflow.data import FactPrompt, TokenSpans, TokenType, find_spans, load_dataset
    from infoflow.engines.fast import FastEngine
    from infoflow.engines.patching import FastPatchEngine, PatchRequest, ReferencePatchEngine
    from infoflow.engines.reference import ReferenceEngine
    from infoflow.interventions.knockout import FeatureCategory, FeatureSelection, Knockout, KnockoutMode, window
    from infoflow.interventions.mixers import Mixers
    from infoflow.interventions.patching import Corruption, Patch
    from infoflow.models import CausalLM, LoadedModel, list_models, load_model
    from infoflow.models.modes import Site
    from infoflow.store import ResultsStore

_HOMES = {
    "FactPrompt": "infoflow.data",
    "TokenSpans": "infoflow.data",
    "TokenType": "infoflow.data",
    "find_spans": "infoflow.data",
    "load_dataset": "infoflow.data",
    "FastEngine": "infoflow.engines.fast",
    "FastPatchEngine": "infoflow.engines.patching",
    "PatchRequest": "infoflow.engines.patching",
    "ReferencePatchEngine": "infoflow.engines.patching",
    "Corruption": "infoflow.interventions.patching",
    "Patch": "infoflow.interventions.patching",
    "Site": "infoflow.models.modes",
    "ReferenceEngine": "infoflow.engines.reference",
    "FeatureCategory": "infoflow.interventions.knockout",
    "FeatureSelection": "infoflow.interventions.knockout",
    "Knockout": "infoflow.interventions.knockout",
    "KnockoutMode": "infoflow.interventions.knockout",
    "window": "infoflow.interventions.knockout",
    "Mixers": "infoflow.interventions.mixers",
    "CausalLM": "infoflow.models",
    "LoadedModel": "infoflow.models",
    "list_models": "infoflow.models",
    "load_model": "infoflow.models",
    "ResultsStore": "infoflow.store",
}
__all__ = [
    "CausalLM",
    "Corruption",
    "FactPrompt",
    "FastEngine",
    "FastPatchEngine",
    "FeatureCategory",
    "FeatureSelection",
    "Knockout",
    "KnockoutMode",
    "LoadedModel",
    "Mixers",
    "Patch",
    "PatchRequest",
    "ReferenceEngine",
    "ReferencePatchEngine",
    "ResultsStore",
    "Site",
    "TokenSpans",
    "TokenType",
    "find_spans",
    "list_models",
    "load_dataset",
    "load_model",
    "window",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'infoflow' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
