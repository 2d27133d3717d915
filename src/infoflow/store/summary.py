"""Runs as people read them: one line per run (name, parameters, progress) for lists, and one run in full, as
plain values that a terminal table, a web page or JSON output show as they are."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pandas as pd

from infoflow.naming import short_filter, short_model_name
from infoflow.store.base import ResultsStore

SHORT_ID = 8  # digits of a run id shown in lists; any unique prefix of 4 or more addresses a run


def progress(n_done: int, n_prompts: Any) -> str:
    """Prompts done, out of those expected when known: ``12/40``."""
    return f"{int(n_done)}/{int(n_prompts)}" if pd.notna(n_prompts) else str(int(n_done))


def status_label(status: str, n_errors: int) -> str:
    """complete / partial / failed / running, with the number of prompts that failed (errors) if any."""
    return f"{status} ({n_errors} errors)" if n_errors else str(status)


def runs_overview(store: ResultsStore) -> pd.DataFrame:
    """One row per run, oldest first: short id, name, tags, kind, model, dataset, short filter, status, prompts
    done/expected, prompts with errors, rows, last update (to the minute), and the full ``run_id``."""
    runs = store.runs()
    return pd.DataFrame(
        {
            "id": runs["run_id"].str[:SHORT_ID],
            "name": runs["name"],
            "tags": [", ".join(t) for t in runs["tags"]],
            "kind": runs["kind"],
            "model": [short_model_name(m) for m in runs["model_id"]],
            "dataset": runs["dataset"],
            "filter": [short_filter(f, 28) for f in runs["dataset_filter"]],
            "status": runs["status"],
            "prompts": [progress(d, n) for d, n in zip(runs["n_done"], runs["n_prompts"], strict=True)],
            "errors": runs["n_errors"].astype(int),
            "rows": runs["n_rows"].astype(int),
            "updated": runs["updated_at"].astype(str).str[5:16],
            "run_id": runs["run_id"],
        }
    )


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | pd.Timestamp):
        return value.isoformat(sep=" ", timespec="seconds")
    if hasattr(value, "tolist"):
        return value.tolist()
    return None if isinstance(value, float) and pd.isna(value) else value


def runs_records(store: ResultsStore) -> list[dict[str, Any]]:
    """Every run as plain values (``--json``): the stored fields with ``params`` as an object."""
    runs = store.runs()
    records = [{k: _plain(v) for k, v in row.items()} for row in runs.to_dict("records")]
    for record in records:
        record["params"] = json.loads(record["params"])
    return records


def run_details(store: ResultsStore, run_id: str, *, max_errors: int = 20) -> dict[str, Any]:
    """One run in full as plain values: identity, labels, manifest, parameters, progress, rows, timing and its
    first ``max_errors`` prompt errors."""
    run = store.run(run_id)
    m = run.manifest
    (record,) = [r for r in runs_records(store) if r["run_id"] == run.run_id]
    errors = store.frame(run.run_id, "errors")
    return {
        "run_id": run.run_id,
        "name": run.name,
        "tags": list(run.tags),
        "kind": m.kind,
        "status": run.status.value,
        "message": run.message,
        "model_id": m.model_id,
        "model_revision": m.model_revision,
        "dataset": m.dataset,
        "dataset_filter": m.dataset_filter,
        "params": dict(m.params),
        "n_prompts": m.n_prompts,
        "n_done": record["n_done"],
        "n_errors": record["n_errors"],
        "n_rows": record["n_rows"],
        "created_at": _plain(run.created_at),
        "updated_at": _plain(run.updated_at),
        "seconds": round((run.updated_at - run.created_at).total_seconds(), 1),
        "package_version": m.package_version,
        "errors": [{"prompt_id": int(p), "reason": r} for p, r in errors[["prompt_id", "reason"]].values[:max_errors]],
    }


def details_rows(details: dict[str, Any]) -> list[tuple[str, str]]:
    """``run_details`` as (field, text) lines for a two-column table; parameters one per line."""
    value = {
        "run": details["run_id"],
        "name": details["name"],
        "tags": ", ".join(details["tags"]) or "-",
        "kind": details["kind"],
        "status": details["status"] + (f": {details['message']}" if details["message"] else ""),
        "model": f"{details['model_id']} (revision {details['model_revision'][:12]})",
        "dataset": details["dataset"],
        "filter": details["dataset_filter"],
        "prompts": f"{progress(details['n_done'], details['n_prompts'])} done, {details['n_errors']} with errors",
        "rows": str(details["n_rows"]),
        "created": details["created_at"],
        "updated": f"{details['updated_at']} ({details['seconds']:g} s after creation)",
        "infoflow": details["package_version"],
    }
    params = [(f"  {k}", _param_text(v)) for k, v in details["params"].items()]
    return [*value.items(), ("parameters", ""), *params]


def _param_text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return f"{value:.4g}" if isinstance(value, float) else str(value)
