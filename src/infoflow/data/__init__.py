"""Datasets, fact prompts and token spans."""

from infoflow.data.counterfact import reference_counterfact_index, reference_order, with_reference_ids
from infoflow.data.datasets import DATASETS, DatasetLoader, load_dataset, register_dataset
from infoflow.data.errors import DatasetError, DatasetUnavailableError
from infoflow.data.prompts import FactPrompt, as_continuation
from infoflow.data.spans import PromptError, TokenSpans, TokenType, find_spans, find_spans_many

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetLoader",
    "DatasetUnavailableError",
    "FactPrompt",
    "PromptError",
    "TokenSpans",
    "TokenType",
    "as_continuation",
    "find_spans",
    "find_spans_many",
    "load_dataset",
    "reference_counterfact_index",
    "reference_order",
    "register_dataset",
    "with_reference_ids",
]
