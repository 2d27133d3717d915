"""Runs: every run of the store with its name, status and progress (refreshed while a run writes); one run in
full; export, label and delete."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from infoflow.app import runs
from infoflow.app.shell import page
from infoflow.app.store_access import open_store
from infoflow.app.views.common import from_url, to_url

FLASH = "runs_flash"
LIVE_SECONDS = 3  # the table refreshes this often while a run is being written


def runs_list(store_path: Path) -> None:
    """The table of runs; while a run writes, it refreshes itself (as a fragment) every ``LIVE_SECONDS``."""
    with open_store(store_path) as store:
        table = runs.runs_table(store)
    live = runs.any_running(table)
    st.caption(f"{len(table)} runs in {store_path}" + (f" · live: refreshed every {LIVE_SECONDS} s" if live else ""))
    st.dataframe(table, hide_index=True, width="stretch")


def render(store_path: Path) -> None:
    if FLASH in st.session_state:
        st.success(st.session_state.pop(FLASH))
    with open_store(store_path) as store:
        table = runs.runs_table(store)
    if table.empty:
        st.info(f"The store {store_path} holds no runs yet: start one on the Launch page.")
        return
    st.fragment(runs_list, run_every=LIVE_SECONDS if runs.any_running(table) else None)(store_path)
    names = table.set_index("run_id")["name"]
    from_url("runs_run", "run", table["run_id"].tolist())
    run_id = st.selectbox("Run", table["run_id"].tolist(), key="runs_run",
                          format_func=lambda r: f"{names[r]} · {r[:8]}")  # fmt: skip
    to_url("runs_run", "run", run_id)
    open_links(run_id, str(table.set_index("run_id")["kind"][run_id]))
    with open_store(store_path) as store:
        details = runs.manifest_details(store, run_id)
        errors = runs.run_errors(store, run_id)
        fmt = st.radio("Export format", runs.EXPORT_FORMATS, horizontal=True, key="runs_format")
        data = runs.export_bytes(store, run_id, fmt)
    left, right = st.columns(2)
    with left:
        st.subheader(details["name"])
        st.dataframe(runs.details_table(details), hide_index=True, width="stretch")
    with right:
        st.subheader(f"Errors ({len(errors)} prompts)")
        if errors.empty:
            st.write("no prompt failed")
        else:
            st.dataframe(errors, hide_index=True)
        st.subheader("Export")
        st.download_button(f"Download {fmt.upper()}", data, file_name=f"{run_id}.{fmt}", key="runs_download")
        labels(store_path, run_id, details)
        st.subheader("Delete")
        sure = st.checkbox(f"delete run {run_id} and all its rows", key="runs_confirm")
        if st.button("Delete run", disabled=not sure, key="runs_delete"):
            with open_store(store_path, write=True) as store:
                runs.delete_run(store, run_id)
            st.session_state[FLASH] = f"deleted run {run_id}"
            st.rerun()


def open_links(run_id: str, kind: str) -> None:
    """Links that open the run on the pages that show it (with the run in their URL)."""
    pages = {"info_flow": ["Prompts", "Compare info flow"], "heatmap": ["Prompts", "Heatmaps"]}.get(kind, [])
    pages += ["Hidden attention"] if kind == "attention" else []
    for column, title in zip(st.columns(max(1, len(pages))), pages, strict=False):
        column.page_link(page(title), label=f"Open in {title} →", query_params={"run": run_id})


def labels(store_path: Path, run_id: str, details: dict) -> None:
    """Rename the run and set its tags."""
    st.subheader("Name and tags")
    name = st.text_input("Name", details["name"], key=f"runs_name_{run_id}")
    tags = st.text_input("Tags (comma separated)", ", ".join(details["tags"]), key=f"runs_tags_{run_id}")
    if st.button("Save name and tags", key="runs_label"):
        wanted = [t.strip() for t in tags.split(",") if t.strip()]
        with open_store(store_path, write=True) as store:
            store.label_run(run_id, name=name.strip() or None, tags=wanted, untag=set(details["tags"]) - set(wanted))
        st.session_state[FLASH] = f"saved the name and tags of run {run_id}"
        st.rerun()
