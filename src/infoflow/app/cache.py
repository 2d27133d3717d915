"""Models shared by every session of the app process (loaded once per name and device)."""

from __future__ import annotations

import os

import streamlit as st
import torch

from infoflow.models import load_model
from infoflow.models.load import LoadedModel

THREADS_VARIABLE = "INFOFLOW_TORCH_THREADS"


def apply_thread_setting() -> None:
    """``$INFOFLOW_TORCH_THREADS`` CPU threads for torch, if set (1 is fastest for the small built-in
    models on a busy CPU)."""
    threads = os.environ.get(THREADS_VARIABLE)
    if threads and threads.isdigit() and int(threads) != torch.get_num_threads():
        torch.set_num_threads(int(threads))


@st.cache_resource(show_spinner=False, max_entries=4)
def cached_model(name: str, device: str = "cpu") -> LoadedModel:
    """``load_model(name)``; a failure is not cached, so a fixed path loads on the next try."""
    return load_model(name, device=device)
