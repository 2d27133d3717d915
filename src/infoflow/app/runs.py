"""Runs page logic: every run with its manifest, status and row counts; export and delete."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd

from infoflow.naming import short_model_name
from infoflow.store import ResultsStore

EXPORT_FORMATS = ("csv", "parquet")
COLUMNS = ["run_id", "kind", "model", "dataset", "filter", "status", "prompts", "rows", "errors", "updated"]


def status_label(status: str, n_errors: int) -> str:
    """complete / partial / failed / running, with the number of prompts that failed (errors) if any."""
    return f"{status} ({n_errors} errors)" if n_errors else str(status)


def row_count(store: ResultsStore, run_id: str) -> int:
    return len(store.frame(run_id))


def runs_table(store: ResultsStore) -> pd.DataFrame:
    """One row per run: id, kind, model, dataset, filter, status, prompts done/expected, rows, errors."""
    runs = store.runs()
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.DataFrame(
        {
            "run_id": runs["run_id"],
            "kind": runs["kind"],
            "model": [short_model_name(m) for m in runs["model_id"]],
            "dataset": runs["dataset"],
            "filter": runs["dataset_filter"],
            "status": [status_label(s, int(e)) for s, e in zip(runs["status"], runs["n_errors"], strict=True)],
            "prompts": [
                f"{int(d)}/{int(n)}" if pd.notna(n) else str(int(d))
                for d, n in zip(runs["n_done"], runs["n_prompts"], strict=True)
            ],
            "rows": [row_count(store, r) for r in runs["run_id"]],
            "errors": runs["n_errors"].astype(int),
            "updated": runs["updated_at"].astype(str).str[:19],
        }
    )
    return table[COLUMNS]


def manifest_details(store: ResultsStore, run_id: str) -> dict[str, object]:
    """The run's manifest, status, message and timestamps as plain JSON-able values."""
    run = store.run(run_id)
    m = run.manifest
    return {
        "run_id": run.run_id,
        "kind": m.kind.value,
        "model_id": m.model_id,
        "model_revision": m.model_revision,
        "dataset": m.dataset,
        "dataset_filter": m.dataset_filter,
        "params": json.loads(json.dumps(dict(m.params))),
        "n_prompts": m.n_prompts,
        "package_version": m.package_version,
        "status": run.status.value,
        "message": run.message,
        "created_at": str(run.created_at),
        "updated_at": str(run.updated_at),
    }


def run_errors(store: ResultsStore, run_id: str) -> pd.DataFrame:
    """The prompts of a run that failed, with their reasons."""
    return store.frame(run_id, "errors")[["prompt_id", "reason"]]


def export_bytes(store: ResultsStore, run_id: str, fmt: str) -> bytes:
    """A run's rows as a CSV or Parquet file (the store's own export: Parquet carries the manifest)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {EXPORT_FORMATS}, not {fmt!r}")
    with tempfile.TemporaryDirectory() as folder:
        path = store.export(run_id, Path(folder) / f"{run_id}.{fmt}")
        return path.read_bytes()


def delete_run(store: ResultsStore, run_id: str) -> None:
    store.delete_run(run_id)
