"""Recall methods: the stored causal-tracing, sublayer-knockout and vocabulary-projection runs as figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from infoflow.app import recall
from infoflow.app.store_access import open_store
from infoflow.app.views.common import chosen_run_rows, from_url, to_url
from infoflow.app.views.heatmaps import latest_per_model

MEAN = "mean over prompts (by part of the prompt)"


def render(store_path: Path) -> None:
    methods = list(recall.METHODS)
    from_url("recall_method", "method", methods)
    method = st.radio("Method", methods, format_func=recall.METHODS.get, horizontal=True, key="recall_method")
    to_url("recall_method", "method", method)
    with open_store(store_path) as store:
        frame = chosen_run_rows(
            store,
            method,
            "Runs",
            latest_per_model,
            lambda results, run_ids: recall.load_rows(method, results, run_ids),
            key=f"recall_runs_{method}",
        )
    if frame is None:
        return
    {"causal_tracing": tracing, "sublayer_knockout": knockout, "vocab_projection": projection}[method](frame)


def tracing(frame: pd.DataFrame) -> None:
    prompts = recall.prompt_texts(frame)
    columns = st.columns(2)
    choice = columns[0].selectbox("Prompt", [MEAN, *prompts], key="recall_tracing_prompt",
                                  format_func=lambda p: p if p == MEAN else f"{p}: {prompts[p]}")  # fmt: skip
    value = columns[1].radio("Value", list(recall.TRACING_VALUES), format_func=recall.TRACING_VALUES.get,
                             horizontal=True, key="recall_tracing_value")  # fmt: skip
    for figure in recall.tracing_figures(frame, None if choice == MEAN else int(choice), value):
        st.pyplot(figure)


def knockout(frame: pd.DataFrame) -> None:
    targets, sizes = recall.knockout_choices(frame)
    columns = st.columns(3)
    target = columns[0].selectbox("Target token", targets, key="recall_knockout_target")
    size = columns[1].selectbox("Window size", sizes, key="recall_knockout_window")
    metric = columns[2].radio("Metric", ["diff", "hit"], horizontal=True, key="recall_knockout_metric",
                              format_func={"diff": "change of p (%)", "hit": "still top-1 (%)"}.get)  # fmt: skip
    st.pyplot(recall.knockout_figure(frame, target, int(size), metric))


def projection(frame: pd.DataFrame) -> None:
    for figure in recall.projection_figures(frame):
        st.pyplot(figure)
    st.subheader("Logit lens of one prompt")
    runs = dict(zip(frame["run_id"], frame["model"], strict=False))
    columns = st.columns(3)
    run_id = columns[0].selectbox("Run", list(runs), format_func=runs.get, key="recall_lens_run")
    prompt_ids = sorted(int(p) for p in frame.loc[frame["run_id"] == run_id, "prompt_id"].unique())
    prompt_id = columns[1].selectbox("Prompt", prompt_ids, key="recall_lens_prompt")
    positions = {"subject_last": "last subject token", "last": "last token"}
    position = columns[2].radio("Position", list(positions), format_func=positions.get, horizontal=True,
                                key="recall_lens_position")  # fmt: skip
    st.dataframe(recall.logit_lens_table(frame, run_id, int(prompt_id), position), hide_index=True)
