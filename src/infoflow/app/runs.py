"""Runs page logic: every run with its name, parameters, status and row counts; one run in full; export, label
and delete."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from infoflow.store import ResultsStore
from infoflow.store.export import WRITERS
from infoflow.store.summary import details_rows, run_details, runs_overview, status_label

EXPORT_FORMATS = tuple(WRITERS)
COLUMNS = ["name", "run_id", "kind", "model", "dataset", "filter", "status", "prompts", "rows", "errors", "updated"]
COLUMNS += ["tags"]


def runs_table(store: ResultsStore) -> pd.DataFrame:
    """One row per run: name, id, kind, model, dataset, short filter, status (with errors), prompts
    done/expected, rows, errors, last update, tags."""
    overview = runs_overview(store)
    status = [status_label(s, int(e)) for s, e in zip(overview["status"], overview["errors"], strict=True)]
    return overview.assign(status=status)[COLUMNS]


def any_running(table: pd.DataFrame) -> bool:
    """Whether a run of the table is being written now (the page then refreshes itself)."""
    return bool(table["status"].str.startswith("running").any())


def manifest_details(store: ResultsStore, run_id: str) -> dict[str, object]:
    """The run in full (``store.summary.run_details``): identity, labels, manifest, progress, timing."""
    return run_details(store, run_id)


def details_table(details: dict[str, object]) -> pd.DataFrame:
    """``manifest_details`` as a two-column table (field, value) to show on the page."""
    return pd.DataFrame(details_rows(details), columns=["field", "value"])


def run_errors(store: ResultsStore, run_id: str) -> pd.DataFrame:
    """The prompts of a run that failed, with their reasons."""
    return store.frame(run_id, "errors")[["prompt_id", "reason"]]


def export_bytes(store: ResultsStore, run_id: str, fmt: str) -> bytes:
    """A run's rows as a file of one of ``EXPORT_FORMATS`` (the store's own export: Parquet carries the run)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {EXPORT_FORMATS}, not {fmt!r}")
    with tempfile.TemporaryDirectory() as folder:
        path = store.export(run_id, Path(folder) / f"{run_id}.{fmt}")
        return path.read_bytes()


def delete_run(store: ResultsStore, run_id: str) -> None:
    store.delete_run(run_id)
