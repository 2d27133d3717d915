"""The app's frame: sidebar (store file, page), one page at a time, errors shown as messages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from infoflow.app.cache import apply_thread_setting
from infoflow.app.errors import user_message
from infoflow.app.store_access import resolve_store_path
from infoflow.app.views import compare, explorer, features, heatmaps, hidden, launch, runs
from infoflow.store import default_store_path

PAGES: dict[str, Callable[[Path], None]] = {
    "Runs": runs.render,
    "Compare info flow": compare.render,
    "Heatmaps": heatmaps.render,
    "Explorer": explorer.render,
    "Hidden attention": hidden.render,
    "Mamba features": features.render,
    "Launch": launch.render,
}


def guarded(render: Callable[[Path], None], store_path: Path) -> None:
    """Draw a page; an expected error becomes a clear message, an unexpected one a message with details."""
    try:
        render(store_path)
    except Exception as error:
        message = user_message(error)
        if message is not None:
            st.error(message)
        else:
            st.error(f"Unexpected error ({type(error).__name__}): {error}")
            with st.expander("details"):
                st.exception(error)


def main() -> None:
    st.set_page_config(page_title="infoflow", page_icon="🔀", layout="wide")
    apply_thread_setting()
    st.sidebar.title("infoflow")
    store_text = st.sidebar.text_input("Results store", str(default_store_path()), key="store")
    page = st.sidebar.radio("Page", list(PAGES), key="page")
    st.title(page)
    guarded(PAGES[page], resolve_store_path(store_text))
