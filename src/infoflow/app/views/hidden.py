"""Hidden attention: per layer, the mixing matrix of a prompt (mean over features, or one channel / head)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from infoflow.app import hidden
from infoflow.app.compare import runs_of_kind
from infoflow.app.explorer import DEFAULT_PROMPT
from infoflow.app.features import decay_table
from infoflow.app.figures import matrix_figure
from infoflow.app.store_access import open_store
from infoflow.app.views.common import load, model_picker

ROWS = "hidden_rows"


@st.cache_data(show_spinner="every feature's matrix of this layer", max_entries=32)
def layer_features(name: str, prompt: str, subject: str, layer: int) -> pd.DataFrame:
    return hidden.compute(load(name), prompt, subject, per_feature=True, layers=[layer])


def render(store_path: Path) -> None:
    source = st.radio("Matrices", ["compute for a prompt", "stored attention run"], horizontal=True,
                      key="hidden_source")  # fmt: skip
    if source == "compute for a prompt":
        name = model_picker("hidden")
        prompt = st.text_input("Prompt", DEFAULT_PROMPT, key="hidden_prompt")
        subject = st.text_input("Subject (empty: found)", key="hidden_subject")
        if st.button("Compute", type="primary", key="hidden_run"):
            loaded = load(name)
            with st.spinner("hidden attention of every layer"):
                rows = hidden.compute(loaded, prompt, subject, per_feature=False)
            st.session_state[ROWS] = (rows, loaded.name, hidden.feature_name(loaded), (name, prompt, subject))
    else:
        with open_store(store_path) as store:
            runs = runs_of_kind(store, "attention")
            if runs.empty:
                st.info("No attention runs in this store: `infoflow attention --model M` writes one.")
                return
            label = st.selectbox("Run", runs["label"].tolist(), key="hidden_run_choice")
            run = runs[runs["label"] == label].iloc[0]
            st.session_state[ROWS] = (hidden.stored(store, run["run_id"]), run["model_id"], "feature", None)
    if ROWS not in st.session_state:
        return
    rows, model, feature_word, computed = st.session_state[ROWS]
    prompt_ids = sorted(int(p) for p in rows["prompt_id"].unique())
    columns = st.columns(3)
    prompt_id = columns[0].selectbox("Prompt id", prompt_ids, key="hidden_prompt_id")
    layer = columns[1].select_slider("Layer", hidden.layers(rows), key="hidden_layer")
    if computed is not None:  # every feature's matrix, for the chosen layer only (a Mamba-1 has thousands)
        rows = layer_features(*computed, layer)
        loaded = load(computed[0])
        if loaded.model.has_decay_features:  # aggregates over the decay categories of the knockouts
            table = decay_table(loaded)
            part = table[table["layer"] == layer]
            rows = hidden.with_category_means(rows, dict(zip(part["feature"], part["category"], strict=True)))
    features = hidden.features(rows, prompt_id)
    feature = columns[2].selectbox(f"{feature_word.capitalize()} (mean: over all)", features, key="hidden_feature")
    matrix, tokens = hidden.matrix(rows, layer, feature, prompt_id)
    n_features = sum(f.isdigit() for f in features)
    what = {"mean": f"mean over {n_features} {feature_word}s"}.get(
        feature, f"{feature_word} {feature}" if feature.isdigit() else f"mean over the {feature_word}s of {feature}"
    )
    st.plotly_chart(matrix_figure(matrix, tokens, f"{model} · layer {layer} · {what}"), key="hidden_chart")
