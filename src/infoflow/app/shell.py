"""The app's frame: the sidebar (store file), the pages (Streamlit's multipage navigation: each page has its own
URL, and the run, prompt and choices of a page are in its query parameters), errors shown as messages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from infoflow.app.cache import apply_thread_setting
from infoflow.app.errors import user_message
from infoflow.app.store_access import resolve_store_path
from infoflow.store import default_store_path

PAGES_FOLDER = Path(__file__).resolve().parent / "page_scripts"  # not pages/: Streamlit would list it itself
STORE_KEY = "store"


@dataclass(frozen=True)
class PageEntry:
    title: str
    file: str  # in page_scripts/
    url_path: str


PAGES = (
    PageEntry("Runs", "runs.py", "runs"),
    PageEntry("Prompts", "prompts.py", "prompts"),
    PageEntry("Compare info flow", "compare.py", "compare"),
    PageEntry("Heatmaps", "heatmaps.py", "heatmaps"),
    PageEntry("Recall methods", "recall.py", "recall"),
    PageEntry("Explorer", "explorer.py", "explorer"),
    PageEntry("Hidden attention", "hidden_attention.py", "hidden-attention"),
    PageEntry("Mamba features", "features.py", "features"),
    PageEntry("Launch", "launch.py", "launch"),
)


def page(title: str) -> st.Page:
    """The registered page of a title (for ``st.switch_page`` and ``st.page_link``)."""
    entry = next(p for p in PAGES if p.title == title)
    return st.Page(PAGES_FOLDER / entry.file, title=entry.title, url_path=entry.url_path, default=entry is PAGES[0])


def store_path() -> Path:
    """The store file chosen in the sidebar."""
    return resolve_store_path(st.session_state.get(STORE_KEY) or None)


def show(render: Callable[[Path], None]) -> None:
    """Draw a page on the chosen store; an expected error becomes a clear message, an unexpected one a message
    with details."""
    try:
        render(store_path())
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
    current = st.navigation([page(p.title) for p in PAGES])
    st.sidebar.title("infoflow")
    st.sidebar.text_input("Results store", str(default_store_path()), key=STORE_KEY)
    st.title(current.title)
    current.run()
