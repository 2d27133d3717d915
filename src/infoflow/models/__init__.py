"""Our own forward passes of Mamba-1/2, GPT-2 and Llama-family models, and the one way to load them."""

from infoflow.models.base import CausalLM
from infoflow.models.load import LoadedModel, load_model
from infoflow.models.loading import ModelLoadError
from infoflow.models.registry import ModelEntry, list_models

__all__ = ["CausalLM", "LoadedModel", "ModelEntry", "ModelLoadError", "list_models", "load_model"]
