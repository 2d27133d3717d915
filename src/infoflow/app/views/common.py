"""Widgets shared by pages: the model and run pickers, progress, and loading a model with a spinner."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from infoflow.app.cache import cached_model
from infoflow.app.compare import runs_of_kind
from infoflow.app.explorer import BUILTIN_MODELS
from infoflow.models.load import LoadedModel
from infoflow.store import ResultsStore

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


def chosen_run_rows(
    store: ResultsStore,
    kind: str,
    label: str,
    default: Callable[[pd.DataFrame], list[str]],
    load_rows: Callable[[ResultsStore, list[str]], pd.DataFrame],
    key: str,
) -> pd.DataFrame | None:
    """The rows (``load_rows``) of the runs of ``kind`` chosen in a multiselect (``default``: the labels chosen
    at first, from the runs' frame); None, with a note saying why, when the store has no such run or the chosen
    runs no row."""
    runs = runs_of_kind(store, kind)
    if runs.empty:
        st.info(f"No {kind.replace('_', '-')} runs in this store yet: start one on the Launch page.")
        return None
    ids = dict(zip(runs["label"], runs["run_id"], strict=True))
    chosen = st.multiselect(label, list(ids), default=default(runs), key=key)
    frame = load_rows(store, [ids[c] for c in chosen])
    if frame.empty:
        st.warning("The chosen runs hold no rows yet.")
        return None
    return frame
