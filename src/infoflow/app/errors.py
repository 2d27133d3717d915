"""Errors the app shows as a clear message in the page (never a stack trace only)."""

from __future__ import annotations

from infoflow.data.errors import DatasetError
from infoflow.data.spans import PromptError
from infoflow.experiments.filters import FilterError
from infoflow.models.loading import ModelLoadError
from infoflow.store.errors import StoreError


class AppError(Exception):
    """A problem the user can fix (missing store, bad prompt, subject not found); the message says how."""


# Expected failures: their message is the whole story.
EXPECTED = (AppError, StoreError, ModelLoadError, DatasetError, FilterError, PromptError, FileNotFoundError, ValueError)


def user_message(error: BaseException) -> str | None:
    """The message to show for an expected error (with its kind), or None for an unexpected one."""
    if isinstance(error, ModelLoadError):
        return f"Model load failure: {error}"
    if isinstance(error, StoreError):
        return f"Results store: {error}"
    if isinstance(error, PromptError):
        return f"Bad prompt: {error.reason}"
    if isinstance(error, FilterError):
        return f"Prompt filter: {error}"
    if isinstance(error, DatasetError):
        return f"Dataset: {error}"
    if isinstance(error, EXPECTED):
        return str(error)
    return None
