"""Models shared by every session of the app process (loaded once per name and device)."""

from __future__ import annotations

import streamlit as st

from infoflow.experiments.threads import apply_threads, resolve_threads
from infoflow.models import load_model
from infoflow.models.load import LoadedModel


@st.cache_resource(show_spinner=False)
def thread_setting() -> int:
    """torch's CPU threads in this app process, resolved once: ``$INFOFLOW_THREADS``, else a default that leaves
    room for the machine's other work (``experiments.threads``)."""
    return resolve_threads()


def apply_thread_setting() -> None:
    apply_threads(thread_setting())


@st.cache_resource(show_spinner=False, max_entries=4)
def cached_model(name: str, device: str = "cpu") -> LoadedModel:
    """``load_model(name)``; a failure is not cached, so a fixed path loads on the next try."""
    return load_model(name, device=device)
