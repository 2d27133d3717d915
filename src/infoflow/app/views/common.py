"""Widgets shared by pages: the model picker, progress, and loading a model with a spinner."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from infoflow.app.cache import cached_model
from infoflow.app.explorer import BUILTIN_MODELS
from infoflow.models.load import LoadedModel

OTHER = "other: local folder, .gguf file or hub id"


def model_picker(key: str, choices: tuple[str, ...] = BUILTIN_MODELS) -> str:
    """A built-in model (the first by default) or any model name typed in."""
    choice = st.selectbox("Model", [*choices, OTHER], key=f"{key}_model")
    if choice == OTHER:
        return st.text_input("Model name or path", key=f"{key}_model_other", placeholder="state-spaces/mamba-130m-hf")
    return str(choice)


def load(name: str) -> LoadedModel:
    if not name.strip():
        raise ValueError("enter a model name or path")
    with st.spinner(f"loading {name}"):
        return cached_model(name.strip())


def progress_bar(label: str) -> Callable[[float, str], None]:
    """A progress bar; the returned callback takes (fraction in [0, 1], message)."""
    bar = st.progress(0.0, text=label)
    return lambda fraction, message: bar.progress(min(1.0, max(0.0, fraction)), text=f"{label}: {message}")
