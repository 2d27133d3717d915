"""Our own forward passes of every supported family, and the one way to load them.

Attributes are imported on first use, so that torch-free modules of this package (``modes``) load without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from infoflow.models.base import CausalLM
    from infoflow.models.load import LoadedModel, load_model
    from infoflow.models.loading import ModelLoadError
    from infoflow.models.registry import ModelEntry, list_models

_HOMES = {
    "CausalLM": "infoflow.models.base",
    "LoadedModel": "infoflow.models.load",
    "load_model": "infoflow.models.load",
    "ModelLoadError": "infoflow.models.loading",
    "ModelEntry": "infoflow.models.registry",
    "list_models": "infoflow.models.registry",
}
__all__ = ["CausalLM", "LoadedModel", "ModelEntry", "ModelLoadError", "list_models", "load_model"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
