"""Prompts: a run's prompts in a table (sortable: by p0, by effect), each opening its heatmap or curves and the
top-k predictions after a chosen knockout. The run and prompt are in the URL (``?run=ID&prompt=N``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from infoflow.app import prompts
from infoflow.app.compare import X_LABELS, Y_LABELS, curve_points
from infoflow.app.figures import curves_figure, heatmap_figure
from infoflow.app.heatmaps import panels
from infoflow.app.store_access import open_store
from infoflow.app.views.common import from_url, load, to_url
from infoflow.plots import runs_frame
from infoflow.plots.facts import Fact

SORTS = {"effect (strongest first)": ("effect (%)", True), "p0 (highest first)": ("p0", False),
         "prompt id": ("prompt_id", True)}  # fmt: skip


def render(store_path: Path) -> None:
    with open_store(store_path) as store:
        runs = store.runs()
        runs = runs[runs["kind"].isin(prompts.KINDS)] if not runs.empty else runs
        if runs.empty:
            st.info("No info-flow or heatmap runs in this store yet: start one on the Launch page.")
            return
        names = dict(zip(runs["run_id"], runs["name"], strict=True))
        from_url("prompts_run", "run", list(names))
        run_id = st.selectbox("Run", list(names), key="prompts_run", format_func=lambda r: f"{names[r]} · {r[:8]}")
        to_url("prompts_run", "run", run_id)
        table = prompts.prompt_table(store, run_id)
        run = store.run(run_id)
        rows = runs_frame(store, [run_id], run.manifest.kind)
    if table.empty:
        st.warning("The run holds no rows yet.")
        return
    order = st.radio("Sort by", list(SORTS), horizontal=True, key="prompts_sort")
    column, ascending = SORTS[order]
    table = table.sort_values([column, "prompt_id"], ascending=[ascending, True]).reset_index(drop=True)
    st.caption(f"{len(table)} prompts · effect: the strongest drop of p(target) over the run's knockouts, in % of "
               "p0 · click a row (or a column header to sort) to open the prompt")  # fmt: skip
    ids = table["prompt_id"].tolist()
    from_url("prompts_prompt", "prompt", ids)
    chosen = st.session_state.get("prompts_prompt")
    selected = [ids.index(chosen)] if chosen in ids else []
    event = st.dataframe(
        table, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row", key="prompts_table",
        selection_default={"selection": {"rows": selected, "columns": []}},
        column_config={"p0": st.column_config.NumberColumn(format="%.3f"),
                       "effect (%)": st.column_config.NumberColumn(format="%.1f")},
    )  # fmt: skip
    picked = event.selection.rows if event is not None else []
    if picked:
        st.session_state["prompts_prompt"] = int(table["prompt_id"].iloc[picked[0]])
    prompt_id = st.session_state.get("prompts_prompt")
    to_url("prompts_prompt", "prompt", prompt_id if prompt_id in ids else None)
    if prompt_id in ids:
        fact_row = table[table["prompt_id"] == prompt_id].iloc[0]
        show_prompt(store_path, run_id, rows[rows["prompt_id"] == prompt_id], fact_row)


def show_prompt(store_path: Path, run_id: str, rows: pd.DataFrame, fact_row: pd.Series) -> None:
    """One prompt of the run: its heatmap (heatmap run) or curves (info-flow run), then top-k after a knockout."""
    prompt_id = int(fact_row["prompt_id"])
    st.subheader(f"Prompt {prompt_id}: {fact_row['prompt']!r} → {fact_row['target']!r}")
    st.caption(f"subject {fact_row['subject']!r} · p0 = {fact_row['p0']:.3f} · strongest effect "
               f"{fact_row['effect (%)']:.1f} % at {fact_row['where']}")  # fmt: skip
    with open_store(store_path) as store:
        run = store.run(run_id)
    heatmap = str(run.manifest.kind) == "heatmap"
    if heatmap:
        title = f"Knockout of each token → last token · window size {rows['window_size'].iloc[0]}"
        figure = heatmap_figure(panels(rows, prompt_id), x="window", limit=None, title=title)
    else:
        points = curve_points(rows, "diff", "window")
        figure = curves_figure(points, x_label=X_LABELS["window"], y_label=Y_LABELS["diff"], integer_x=True)
    st.plotly_chart(figure, key="prompts_chart")
    if not fact_row["prompt"]:
        st.info("The prompt's text is not in the store (no evaluate run of this model and dataset) and the dataset "
                "does not read offline: no live knockout.")  # fmt: skip
        return
    knockout_panel(run, rows, fact_row, heatmap)


def start_at_strongest(run_id: str, rows: pd.DataFrame, heatmap: bool) -> None:
    """When a prompt is opened, its knockout choices start at the prompt's strongest effect."""
    opened = (run_id, int(rows["prompt_id"].iloc[0]))
    if st.session_state.get("prompts_opened") == opened:
        return
    st.session_state["prompts_opened"] = opened
    if heatmap:
        row = rows.loc[rows["p"].idxmin()]
        st.session_state["prompts_position"] = int(row["position"])
    else:
        row = rows.loc[rows["diff"].idxmin()]
        st.session_state["prompts_source"] = str(row["source"])
        st.session_state["prompts_category"] = str(row["feature_category"])
    st.session_state["prompts_window"] = int(row["window_start"])


def knockout_panel(run, rows: pd.DataFrame, fact_row: pd.Series, heatmap: bool) -> None:
    st.subheader("Top-k predictions after a knockout")
    st.caption("It opens at the prompt's strongest effect; choose any other knockout of the run.")
    start_at_strongest(run.run_id, rows, heatmap)
    columns = st.columns(4)
    starts = sorted(int(w) for w in rows["window_start"].unique())
    size = int(rows["window_size"].iloc[0])
    start = columns[0].select_slider("Window start (first layer)", starts, key="prompts_window")
    if heatmap:
        tokens = rows.drop_duplicates("position").sort_values("position")
        labels = {int(p): f"{p}: {t!r}" for p, t in zip(tokens["position"], tokens["token"], strict=True)}
        position = columns[1].selectbox("Knocked-out position (last ← it)", list(labels), format_func=labels.get,
                                        key="prompts_position")  # fmt: skip
        choice = prompts.KnockoutChoice(size, start, position=int(position),
                                        options=prompts.run_options(dict(run.manifest.params)))  # fmt: skip
    else:
        source = columns[1].selectbox("Source (target ← it)", sorted(rows["source"].unique()), key="prompts_source")
        category = columns[2].selectbox("Feature category", sorted(rows["feature_category"].unique()),
                                        key="prompts_category")  # fmt: skip
        target = str(rows["target"].iloc[0])
        choice = prompts.KnockoutChoice(size, start, source=str(source), target=target, feature_category=str(category),
                                        options=prompts.run_options(dict(run.manifest.params)))  # fmt: skip
    k = int(columns[3].number_input("Top-k", 1, 50, 10, key="prompts_topk"))
    fact = Fact(str(fact_row["prompt"]), str(fact_row["subject"]), str(fact_row["target"]))
    result = top_k_after(run.manifest.model_id, fact, choice, k)
    st.caption(f"{run.manifest.model_id} on this machine's CPU (reference engine) · p(target) {result.p0:.4f} → "
               f"{result.p:.4f} ({(result.p - result.p0) / result.p0 * 100:+.1f} %)")  # fmt: skip
    numbers = {c: st.column_config.NumberColumn(format="%.4f") for c in ("p", "p clean", "change")}
    st.dataframe(result.table, hide_index=True, column_config=numbers)


@st.cache_data(show_spinner="knocking out", max_entries=64)
def top_k_after(model: str, fact: Fact, choice: prompts.KnockoutChoice, k: int) -> prompts.KnockoutTopK:
    return prompts.knockout_top_k(load(model), fact, choice, k)
