"""Runs: every run of the store with its manifest, status and row counts; export and delete."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from infoflow.app import runs
from infoflow.app.store_access import open_store

FLASH = "runs_flash"


def render(store_path: Path) -> None:
    if FLASH in st.session_state:
        st.success(st.session_state.pop(FLASH))
    with open_store(store_path) as store:
        table = runs.runs_table(store)
        if table.empty:
            st.info(f"The store {store_path} holds no runs yet: start one on the Launch page.")
            return
        st.caption(f"{len(table)} runs in {store_path}")
        st.dataframe(table, hide_index=True, width="stretch")
        run_id = st.selectbox("Run", table["run_id"].tolist(), key="runs_run",
                              format_func=lambda r: f"{r} · {table.set_index('run_id').loc[r, 'kind']}")  # fmt: skip
        details = runs.manifest_details(store, run_id)
        errors = runs.run_errors(store, run_id)
        fmt = st.radio("Export format", runs.EXPORT_FORMATS, horizontal=True, key="runs_format")
        data = runs.export_bytes(store, run_id, fmt)
    left, right = st.columns(2)
    with left:
        st.subheader("Manifest")
        st.json(details)
    with right:
        st.subheader(f"Errors ({len(errors)} prompts)")
        if errors.empty:
            st.write("no prompt failed")
        else:
            st.dataframe(errors, hide_index=True)
        st.subheader("Export")
        st.download_button(f"Download {fmt.upper()}", data, file_name=f"{run_id}.{fmt}", key="runs_download")
        st.subheader("Delete")
        sure = st.checkbox(f"delete run {run_id} and all its rows", key="runs_confirm")
        if st.button("Delete run", disabled=not sure, key="runs_delete"):
            with open_store(store_path, write=True) as store:
                runs.delete_run(store, run_id)
            st.session_state[FLASH] = f"deleted run {run_id}"
            st.rerun()
