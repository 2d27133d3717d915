"""Heatmaps: per prompt, tokens × windows of p − p0 for heatmap runs, side by side across models."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from infoflow.app import heatmaps
from infoflow.app.figures import heatmap_figure
from infoflow.app.store_access import open_store
from infoflow.app.views.common import chosen_run_rows


def latest_per_model(runs: pd.DataFrame) -> list[str]:
    """The labels of each model's latest heatmap run: the panels shown at first."""
    return runs.sort_values("updated_at").drop_duplicates("model_id", keep="last")["label"].tolist()


def render(store_path: Path) -> None:
    with open_store(store_path) as store:
        label = "Runs (one panel each)"
        frame = chosen_run_rows(store, "heatmap", label, latest_per_model, heatmaps.load_rows, key="heatmap_runs")
    if frame is None:
        return
    prompts = heatmaps.prompt_choices(frame)
    columns = st.columns(4)
    prompt_id = columns[0].selectbox("Prompt", list(prompts), key="heatmap_prompt",
                                     format_func=lambda p: f"{p}: {prompts[p]}")  # fmt: skip
    size = columns[1].selectbox("Window size", heatmaps.window_sizes(frame), key="heatmap_window")
    x = columns[2].radio("x axis", ["depth", "window"], horizontal=True, key="heatmap_x")
    scale = columns[3].radio("Colour scale", ["±0.3", "largest change"], horizontal=True, key="heatmap_scale")
    panels = heatmaps.panels(frame, int(prompt_id), int(size))
    figure = heatmap_figure(
        panels,
        x=x,
        limit=0.3 if scale == "±0.3" else None,
        title=f"Knockout of each token → last token · prompt {prompt_id} · window size {size}",
    )
    st.plotly_chart(figure, key="heatmap_chart")  # fmt: skip
