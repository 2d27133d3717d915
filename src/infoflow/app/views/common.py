"""Widgets shared by pages: the model and run pickers, progress, and loading a model with a spinner."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from infoflow.app.cache import cached_model
from infoflow.app.compare import runs_of_kind
from infoflow.app.explorer import BUILTIN_MODELS
from infoflow.models.load import LoadedModel
from infoflow.store import ResultsStore

OTHER = "other: local folder, .gguf file or hub id"


def from_url(key: str, param: str, options: Sequence[Any], multiple: bool = False) -> None:
    """Let the URL's query parameter ``param`` choose the value of the widget ``key`` among ``options``, when the
    URL changed since this page last wrote it (a link, a bookmark, Back) or the widget has no state yet; call
    before the widget is drawn, and
    ``to_url`` after. Values in the URL are strings; an option matches by its ``str``."""
    wanted = st.query_params.get_all(param) if multiple else st.query_params.get(param)
    if not wanted or (key in st.session_state and wanted == st.session_state.get(f"{key}__url")):
        return  # the URL holds what the widget wrote (a widget's state ends when another page is shown)
    by_text = {str(o): o for o in options}
    if multiple:
        found = [by_text[w] for w in wanted if w in by_text]
        if found:
            st.session_state[key] = found
    elif wanted in by_text:
        st.session_state[key] = by_text[wanted]
    st.session_state[f"{key}__url"] = wanted


def to_url(key: str, param: str, value: Any) -> None:
    """Write a widget's value into the URL's query parameter ``param`` (a list: the parameter repeated; None:
    removed), so that the page's URL can be shared and bookmarked."""
    if value is None or (isinstance(value, list) and not value):
        st.query_params.pop(param, None)
        st.session_state.pop(f"{key}__url", None)
        return
    text: str | list[str] = [str(v) for v in value] if isinstance(value, list) else str(value)
    if st.query_params.get_all(param) != (text if isinstance(text, list) else [text]):
        st.query_params[param] = text
    st.session_state[f"{key}__url"] = text


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
    labels = dict(zip(runs["run_id"], runs["label"], strict=True))
    from_url(key, "run", list(labels), multiple=True)
    if key not in st.session_state:
        st.session_state[key] = [r for r, lab in labels.items() if lab in default(runs)]
    st.session_state[key] = [r for r in st.session_state[key] if r in labels]  # runs deleted since
    chosen = st.multiselect(label, list(labels), key=key, format_func=labels.get)
    to_url(key, "run", list(chosen))
    frame = load_rows(store, list(chosen))
    if frame.empty:
        st.warning("The chosen runs hold no rows yet.")
        return None
    return frame
