"""Compare info flow: curves of chosen info-flow runs with 95 % bands; PNG and CSV downloads."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from infoflow.app import compare
from infoflow.app.figures import curves_figure
from infoflow.app.store_access import open_store
from infoflow.app.views.common import chosen_run_rows
from infoflow.plots.aggregate import interval_caption


def first_four(runs: pd.DataFrame) -> list[str]:
    """The labels of the first four runs: the curves shown at first."""
    return runs["label"].tolist()[:4]


def render(store_path: Path) -> None:
    with open_store(store_path) as store:
        frame = chosen_run_rows(store, "info_flow", "Runs", first_four, compare.load_rows, key="compare_runs")
        if frame is None:
            return
        options = compare.available(frame)
        columns = st.columns(4)
        selection = compare.Selection(
            sources=tuple(columns[0].multiselect("Sources", options["sources"], default=options["sources"],
                                                 key="compare_sources")),
            feature_categories=tuple(columns[1].multiselect(
                "Feature categories", options["feature_categories"], default=options["feature_categories"],
                key="compare_categories")),
            window_sizes=tuple(columns[2].multiselect("Window sizes", options["window_sizes"],
                                                      default=options["window_sizes"], key="compare_windows")),
            targets=tuple(columns[3].multiselect("Targets", options["targets"], default=options["targets"],
                                                 key="compare_targets")),
            prompt_filter=st.text_input("Prompt filter", "all", key="compare_filter",
                                        help="e.g. `correct`, `top(3) and not ids(4, 7)`, `all-correct(M1, M2)`"),
        )  # fmt: skip
        rows = compare.apply_selection(store, frame, selection)
    left, right = st.columns(2)
    metric = left.radio("Metric", ["diff", "hit"], horizontal=True, key="compare_metric",
                        format_func=lambda m: {"diff": "change of p (%)", "hit": "hit rate (%)"}[m])  # fmt: skip
    x = right.radio("x axis", ["depth", "window"], horizontal=True, key="compare_x",
                    format_func=lambda v: {"depth": "depth %", "window": "window index"}[v])  # fmt: skip
    points = compare.curve_points(rows, metric, x)
    reference = 0.0 if metric == "diff" else 100.0
    figure = curves_figure(
        points, x_label=compare.X_LABELS[x], y_label=compare.Y_LABELS[metric], reference=reference,
        integer_x=x == "window",
    )  # fmt: skip
    st.plotly_chart(figure, key="compare_chart")
    st.caption(f"{rows['prompt_id'].nunique()} prompts · bands: {interval_caption()}")
    st.download_button("Download CSV", points.to_csv(index=False).encode(), file_name="info-flow.csv",
                       mime="text/csv", key="compare_csv")  # fmt: skip
    if st.button("Make PNG", key="compare_png"):
        st.session_state["compare_png_bytes"] = compare.png_figure(rows, metric, x)
    if "compare_png_bytes" in st.session_state:
        st.download_button("Download PNG", st.session_state["compare_png_bytes"], file_name="info-flow.png",
                           mime="image/png", key="compare_png_download")  # fmt: skip
