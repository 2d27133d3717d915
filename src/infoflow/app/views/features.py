"""Mamba features: decay-norm distribution per layer with the category split; effect of each category."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from infoflow.app import features
from infoflow.app.compare import X_LABELS, Y_LABELS, curve_points, runs_of_kind
from infoflow.app.explorer import DEFAULT_PROMPT
from infoflow.app.figures import curves_figure, histogram_figure
from infoflow.app.store_access import open_store
from infoflow.app.views.common import load, model_picker, progress_bar
from infoflow.plots import runs_frame

EFFECT = "features_effect"


def render(store_path: Path) -> None:
    name = model_picker("features", ("builtin-mamba1", "builtin-mamba2"))
    fraction = st.slider("Exempt fraction", 0.0, 1.0, 1 / 3, 0.01, key="features_fraction")
    loaded = load(name)
    table = features.decay_table(loaded, fraction)
    layer = st.select_slider("Layer", sorted(table["layer"].unique()), key="features_layer")
    part = table[table["layer"] == layer]
    title = f"{loaded.name} · layer {layer}: decay norms Σ_n exp(−exp(A_log)) of {len(part)} features"
    figure = histogram_figure(part, "decay_norm", "category", title, features.COLORS, features.DECAY_NORM)
    st.plotly_chart(figure, key="features_hist")
    with st.expander("Per-layer summary"):
        st.dataframe(features.layer_summary(table), hide_index=True)

    st.subheader("Effect of knocking out each category (subject → last)")
    tab_live, tab_store = st.tabs(["one prompt, live", "from info-flow runs in the store"])
    with tab_live:
        prompt = st.text_input("Prompt", DEFAULT_PROMPT, key="features_prompt")
        if st.button("Run", key="features_run"):
            rows = features.category_effect(loaded, prompt, progress=progress_bar("feature categories"))
            st.session_state[EFFECT] = rows
        if EFFECT in st.session_state:
            points = curve_points(st.session_state[EFFECT], "diff", "window")
            figure = curves_figure(points, x_label=X_LABELS["window"], y_label=Y_LABELS["diff"], integer_x=True)
            st.plotly_chart(figure, key="features_live_chart")
    with tab_store:
        with open_store(store_path) as store:
            runs = runs_of_kind(store, "info_flow")
            runs = runs[[len(json.loads(p).get("feature_categories", [])) > 1 for p in runs["params"]]]
            if runs.empty:
                st.info("No info-flow run with several feature categories: launch one with all three categories.")
                return
            label = st.selectbox("Run", runs["label"].tolist(), key="features_store_run")
            frame = runs_frame(store, [runs[runs["label"] == label]["run_id"].iloc[0]], "info_flow")
        frame = frame[frame["source"] == "subject"] if (frame["source"] == "subject").any() else frame
        points = curve_points(frame, "diff", "depth")
        st.plotly_chart(curves_figure(points, x_label=X_LABELS["depth"], y_label=Y_LABELS["diff"]),
                        key="features_store_chart")  # fmt: skip
