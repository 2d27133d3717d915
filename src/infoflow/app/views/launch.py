"""Launch: start (or resume) an info-flow or heatmap run into the store, with progress."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from infoflow.app.launch import LaunchRequest, launch
from infoflow.app.store_access import open_store
from infoflow.app.views.common import load, model_picker
from infoflow.data.spans import TokenType
from infoflow.experiments.info_flow import InfoFlowParams
from infoflow.interventions.knockout import FeatureCategory, KnockoutMode
from infoflow.interventions.mixers import MixerGroup, Mixers
from infoflow.models.modes import mode_help, strict_help
from infoflow.models.registry import shipped_builtins


def render(store_path: Path) -> None:
    kind = st.radio("Experiment", ["info_flow", "heatmap"], horizontal=True, key="launch_kind",
                    format_func=lambda k: {"info_flow": "info flow", "heatmap": "heatmap"}[k])  # fmt: skip
    name = model_picker("launch", shipped_builtins())
    columns = st.columns(4)
    dataset = columns[0].text_input("Dataset", "synthetic", key="launch_dataset",
                                    help="counterfact, known_1000, synthetic, or a CSV/JSONL/Parquet file")  # fmt: skip
    prompt_filter = columns[1].text_input("Prompt filter", "all", key="launch_filter",
                                          help="`correct` evaluates the model on the whole dataset first")  # fmt: skip
    default_limit = 10 if kind == "info_flow" else 2
    limit = columns[2].number_input("Prompts (sample)", 1, 100_000, default_limit, key="launch_limit")
    window = columns[3].number_input("Window size (0: default)", 0, 64, 0, key="launch_window")
    sources, categories = InfoFlowParams().sources, (FeatureCategory.ALL,)
    if kind == "info_flow":
        default_sources = list(InfoFlowParams().sources)
        sources = st.multiselect("Sources", list(TokenType), default=default_sources, key="launch_sources")
        categories = st.multiselect("Feature categories (recurrent layers)", list(FeatureCategory),
                                    default=[FeatureCategory.ALL],
                                    key="launch_categories")  # fmt: skip
    mixers = st.radio("Mixers knocked out (hybrids)", [g.value for g in MixerGroup], horizontal=True,
                      key="launch_mixers", format_func=lambda m: Mixers(m).label,
                      help="attention: the edges in the attention layers only; recurrent: in the recurrent "
                      "layers only (Mamba, Gated DeltaNet, RG-LRU, RWKV, mLSTM); windows stay windows of all "
                      "layers")  # fmt: skip
    strict = st.checkbox("strict (also block the conv / token-shift path)", key="launch_strict", help=strict_help())
    mode = st.radio("Knockout mode", list(KnockoutMode), horizontal=True, key="launch_mode", help=mode_help())
    st.caption(f"into {store_path}; the same settings again resume the same run")
    if st.button("Start run", type="primary", key="launch_start"):
        if not sources or not categories:
            raise ValueError("choose at least one source and one feature category")
        request = LaunchRequest(
            kind=kind, dataset=dataset, prompt_filter=prompt_filter, limit=int(limit), window_size=int(window) or None,
            sources=tuple(sources), feature_categories=tuple(categories), mode=KnockoutMode(mode), strict=strict,
            mixers=Mixers(mixers),
        )  # fmt: skip
        loaded = load(name)
        bar = st.progress(0.0, text="choosing prompts")

        def progress(done: int, total: int) -> None:
            bar.progress(done / max(1, total), text=f"{kind} {loaded.name}: {done}/{total} prompts")

        with open_store(store_path, write=True) as store:
            run_id = launch(loaded, store, request, progress)
            run = store.run(run_id)
        st.success(f"run {run_id} {run.status.value}: {run.manifest.n_prompts} prompts into {store_path}. "
                   "See it on the Runs, Compare and Heatmaps pages.")  # fmt: skip
