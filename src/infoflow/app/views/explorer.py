"""Explorer: type a prompt, get the clean top-k, the heatmap and the per-source curves live."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import streamlit as st

from infoflow.app.compare import X_LABELS, Y_LABELS, curve_points
from infoflow.app.explorer import DEFAULT_PROMPT, ExplorerRequest, ExplorerResult, explore
from infoflow.app.figures import curves_figure, heatmap_figure
from infoflow.app.heatmaps import panels
from infoflow.app.views.common import load, model_picker, progress_bar
from infoflow.data.spans import TokenType

RESULT = "explorer_result"
METRICS = {"diff": "change of p (%)", "hit": "hit rate (%)"}


def render(store_path: Path) -> None:
    del store_path  # the explorer computes live and writes nothing
    name = model_picker("explorer")
    prompt = st.text_input("Prompt", DEFAULT_PROMPT, key="explorer_prompt")
    columns = st.columns(4)
    subject = columns[0].text_input("Subject (empty: found)", key="explorer_subject")
    target = columns[1].text_input("Target (empty: the model's top-1)", key="explorer_target")
    window = columns[2].number_input("Window size (0: default)", 0, 64, 0, key="explorer_window")
    top_k = columns[3].number_input("Top-k", 1, 50, 10, key="explorer_topk")
    if st.button("Run explorer", type="primary", key="explorer_run"):
        st.session_state.pop(RESULT, None)
        loaded = load(name)
        request = ExplorerRequest(prompt, subject, target, int(window) or None, int(top_k))
        st.session_state[RESULT] = explore(loaded, request, progress_bar(f"{loaded.name}"))
    result: ExplorerResult | None = st.session_state.get(RESULT)
    if result is not None:
        show(result)


def show(result: ExplorerResult) -> None:
    fact = result.fact
    found = " (found)" if result.subject_found else ""
    own = " (the model's top-1)" if result.target_from_model else ""
    st.success(f"{len(result.tokens)} tokens in {result.seconds:.1f} s · subject {fact.subject!r}{found} · "
               f"target {fact.target!r}{own} · p0 = {result.p0:.3f}")  # fmt: skip
    left, right = st.columns([1, 3])
    with left:
        st.subheader("Clean top-k")
        st.dataframe(result.top_k, hide_index=True)
    with right:
        st.subheader("Heatmap: knockout of last ← each token")
        subject = tuple(result.spans.positions(TokenType.SUBJECT))
        marked = [replace(p, subject=subject, target=fact.target) for p in panels(result.heatmap_rows, 0)]
        figure = heatmap_figure(marked, x="window", limit=None)
        st.plotly_chart(figure, key="explorer_heatmap")
    st.subheader("Info flow to the last token, per source")
    metric = st.radio("Metric", ["diff", "hit"], horizontal=True, key="explorer_metric", format_func=METRICS.get)
    points = curve_points(result.curve_rows, metric, "window")
    reference = 0.0 if metric == "diff" else 100.0
    figure = curves_figure(
        points, x_label=X_LABELS["window"], y_label=Y_LABELS[metric], reference=reference, integer_x=True
    )
    st.plotly_chart(figure, key="explorer_curves")
