"""The results store: runs with manifests, idempotent row writes, resume, export.

One DuckDB file. DuckDB lets one process write, or several read, at a time; a ``ResultsStore`` (like its
DuckDB connection) is for one thread. Every write is one transaction: a crash loses at most the batch
being written, never half of it.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import duckdb
import pandas as pd
import pyarrow as pa

from infoflow.store.connection import connect, transaction
from infoflow.store.errors import StoreError, UnknownRunError
from infoflow.store.manifest import ExperimentKind, Manifest, Run, RunStatus, canonical_json
from infoflow.store.rows import Rows, to_arrow
from infoflow.store.schema import COMPLETED, TABLES, Table, ensure_schema

if TYPE_CHECKING:
    import polars

DEFAULT_STORE = "infoflow-results.duckdb"

# Identifies this process: a run left 'running' by any other process was interrupted, so it reads 'partial'.
_TOKEN = uuid.uuid4().hex

_RUNS_QUERY = """
SELECT r.run_id, r.kind, r.model_id, r.model_revision, r.dataset, r.dataset_filter, r.params, r.n_prompts,
       (SELECT count(*) FROM completed c WHERE c.run_id = r.run_id) AS n_done,
       (SELECT count(*) FROM errors e WHERE e.run_id = r.run_id) AS n_errors,
       CASE WHEN r.status = 'running' AND r.session IS DISTINCT FROM $session THEN 'partial' ELSE r.status END
           AS status,
       r.message, r.package_version, r.created_at, r.updated_at
FROM runs r
"""


def default_store_path() -> Path:
    """``$INFOFLOW_STORE`` if set, else ``./infoflow-results.duckdb``."""
    return Path(os.environ.get("INFOFLOW_STORE") or DEFAULT_STORE)


def _literal(text: str) -> str:
    """A SQL string literal (for COPY options, which take no parameters)."""
    return "'" + text.replace("'", "''") + "'"


def _session() -> str:
    return f"{os.getpid()}-{_TOKEN}"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class ResultsStore:
    """Runs and their rows in one DuckDB file. Open with ``ResultsStore.open``; use as a context manager."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, read_only: bool) -> None:
        self._con = con
        self.path = path
        self.read_only = read_only
        self._kinds: dict[str, ExperimentKind] = {}

    @classmethod
    def open(cls, path: str | Path | None = None, *, read_only: bool = False) -> ResultsStore:
        """Open (creating it if needed and writable) the store at ``path`` (default: ``default_store_path()``)."""
        path = Path(path) if path is not None else default_store_path()
        con = connect(path, read_only)
        try:
            ensure_schema(con, path, read_only)
        except duckdb.Error as e:
            con.close()
            raise StoreError(f"cannot read results store {path}: {e}") from e
        except BaseException:
            con.close()
            raise
        return cls(con, path, read_only)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # --- runs ---

    def start_run(self, manifest: Manifest) -> Run:
        """Create the run of ``manifest``, or find it (same identity => same run_id) to resume; mark it running."""
        self._check_writable()
        run_id = manifest.run_id
        now = _now()
        with transaction(self._con):
            query = "SELECT package_version FROM runs WHERE run_id = ?"
            found = next(iter(self._con.execute(query, [run_id]).fetchall()), None)
            if found is None:
                m = manifest
                values = [run_id, m.kind.value, m.model_id, m.model_revision, m.dataset, m.dataset_filter]
                values += [canonical_json(m.params), m.n_prompts, m.package_version, now, now, _session()]
                self._con.execute(f"INSERT INTO runs VALUES ({', '.join(['?'] * 11)}, 'running', NULL, ?)", values)
            else:
                self._con.execute(
                    "UPDATE runs SET status = 'running', message = NULL, session = ?, updated_at = ?, "
                    "n_prompts = coalesce(?, n_prompts) WHERE run_id = ?",
                    [_session(), now, manifest.n_prompts, run_id],
                )
        if found is not None and found[0] != manifest.package_version:
            warnings.warn(
                f"resuming run {run_id} created by infoflow {found[0]} with infoflow {manifest.package_version}",
                stacklevel=2,
            )
        return self.run(run_id)

    def finish_run(self, run_id: str, status: RunStatus | str = RunStatus.COMPLETE, message: str | None = None) -> Run:
        """Record how a run ended: complete, partial (stopped early) or failed (with ``message``)."""
        self._check_writable()
        status = RunStatus(status)
        if status is RunStatus.RUNNING:
            raise ValueError("finish_run needs a final status, not 'running'")
        run_id, _ = self._resolve(run_id)
        self._con.execute(
            "UPDATE runs SET status = ?, message = ?, updated_at = ? WHERE run_id = ?",
            [status.value, message, _now(), run_id],
        )
        return self.run(run_id)

    def run(self, run_id: str) -> Run:
        """The run with this id (or unique id prefix of at least 4 characters)."""
        run_id, _ = self._resolve(run_id)
        cursor = self._con.execute(_RUNS_QUERY + "WHERE r.run_id = $run_id", {"session": _session(), "run_id": run_id})
        row = dict(zip([d[0] for d in cursor.description], cursor.fetchall()[0], strict=True))
        manifest = Manifest(
            kind=row["kind"],
            model_id=row["model_id"],
            model_revision=row["model_revision"],
            dataset=row["dataset"],
            dataset_filter=row["dataset_filter"],
            params=json.loads(row["params"]),
            n_prompts=row["n_prompts"],
            package_version=row["package_version"],
        )
        return Run(run_id, manifest, RunStatus(row["status"]), row["created_at"], row["updated_at"], row["message"])

    def runs(self) -> pd.DataFrame:
        """All runs, oldest first: manifest fields, progress (``n_done``, ``n_errors``), status, timestamps."""
        return self._con.execute(_RUNS_QUERY + "ORDER BY r.created_at, r.run_id", {"session": _session()}).df()

    def delete_run(self, run_id: str) -> None:
        """Delete a run and all its rows."""
        self._check_writable()
        run_id, _ = self._resolve(run_id)
        with transaction(self._con):
            for table in (*TABLES, COMPLETED.name, "runs"):
                self._con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        del self._kinds[run_id]

    # --- rows ---

    def add_rows(self, run_id: str, rows: Rows, *, done: Iterable[int] | None = None) -> int:
        """Add rows to the run's table (the table named after its kind); return how many were new.

        Rows whose key exists are skipped. ``done`` lists the prompts whose rows are now all written; by
        default every prompt in ``rows`` (pass the complete ones, or ``()``, when a batch holds part of a
        prompt). Rows and completion marks are committed together or not at all.
        """
        self._check_writable()
        run_id, kind = self._resolve(run_id)
        batch = to_arrow(TABLES[kind], rows)
        prompts = batch["prompt_id"].unique().to_pylist() if done is None else [int(p) for p in done]
        with transaction(self._con):
            added = self._insert(TABLES[kind], run_id, batch)
            if prompts:
                self._con.execute(
                    f"INSERT INTO {COMPLETED.name} SELECT ?, unnest(?::BIGINT[]), ? ON CONFLICT DO NOTHING",
                    [run_id, prompts, _now()],
                )
            self._touch(run_id)
        return added

    def add_errors(self, run_id: str, errors: Mapping[int, str]) -> int:
        """Record per-prompt errors ``{prompt_id: reason}``; return how many were new."""
        self._check_writable()
        run_id, _ = self._resolve(run_id)
        batch = to_arrow(TABLES["errors"], [{"prompt_id": p, "reason": r} for p, r in errors.items()])
        with transaction(self._con):
            added = self._insert(TABLES["errors"], run_id, batch)
            self._touch(run_id)
        return added

    def completed_prompts(self, run_id: str, *, include_errors: bool = True) -> set[int]:
        """Prompts an experiment resuming this run skips: completed ones and (by default) failed ones."""
        run_id, _ = self._resolve(run_id)
        query = f"SELECT prompt_id FROM {COMPLETED.name} WHERE run_id = $run_id"
        if include_errors:
            query += " UNION SELECT prompt_id FROM errors WHERE run_id = $run_id"
        return {row[0] for row in self._con.execute(query, {"run_id": run_id}).fetchall()}

    def done_keys(self, run_id: str, table: str | None = None) -> set[tuple[Any, ...]]:
        """Keys (without ``run_id``) of the rows written, for resuming within a prompt."""
        run_id, spec = self._table(run_id, table)
        columns = ", ".join(spec.key_names[1:])
        return set(self._con.execute(f"SELECT {columns} FROM {spec.name} WHERE run_id = ?", [run_id]).fetchall())

    def frame(self, run_id: str, table: str | None = None, *, polars: bool = False) -> pd.DataFrame | polars.DataFrame:
        """Rows of a run in ``table`` (default: the table of its kind; or ``errors``) by key, as pandas or polars."""
        query, params = self._select(run_id, table)
        relation = self._con.sql(query, params=params)
        return relation.pl() if polars else relation.df()

    def export(self, run_id: str, path: str | Path, *, table: str | None = None, fmt: str | None = None) -> Path:
        """Write a run's rows (as ``frame``) to Parquet (manifest in the file's metadata) or CSV.

        ``fmt`` is ``parquet`` or ``csv``; by default the suffix of ``path``.
        """
        path = Path(path)
        fmt = (fmt or path.suffix.lstrip(".")).lower()
        if fmt not in ("parquet", "csv"):
            raise ValueError(f"export format must be 'parquet' or 'csv', not {fmt!r}")
        run = self.run(run_id)
        query, params = self._select(run.run_id, table)
        options = "FORMAT csv, HEADER"
        if fmt == "parquet":
            options = f"FORMAT parquet, KV_METADATA {{'infoflow.run': {_literal(canonical_json(asdict(run)))}}}"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._con.execute(f"COPY ({query}) TO {_literal(str(path))} ({options})", params)
        return path

    # --- internals ---

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"store {self.path} is open read-only")

    def _resolve(self, run_id: str) -> tuple[str, ExperimentKind]:
        if run_id in self._kinds:
            return run_id, self._kinds[run_id]
        found = self._con.execute("SELECT run_id, kind FROM runs WHERE starts_with(run_id, ?)", [run_id]).fetchall()
        exact = [row for row in found if row[0] == run_id]
        matches = exact or (found if len(run_id) >= 4 else [])
        if len(matches) != 1:
            what = "matches several runs" if matches else "matches no run"
            raise UnknownRunError(f"run id {run_id!r} {what} in store {self.path}")
        full_id, kind = matches[0]
        self._kinds[full_id] = ExperimentKind(kind)
        return full_id, self._kinds[full_id]

    def _table(self, run_id: str, table: str | None) -> tuple[str, Table]:
        run_id, kind = self._resolve(run_id)
        name = table or kind.value
        if name not in TABLES:
            raise ValueError(f"no row table {name!r}; tables: {sorted(TABLES)}")
        return run_id, TABLES[name]

    def _select(self, run_id: str, table: str | None) -> tuple[str, list[str]]:
        """The query of ``frame`` and ``export`` and its parameters."""
        run_id, spec = self._table(run_id, table)
        return f"SELECT * FROM {spec.name} WHERE run_id = ? ORDER BY {', '.join(spec.key_names)}", [run_id]

    def _insert(self, table: Table, run_id: str, batch: pa.Table) -> int:
        columns = ", ".join(batch.column_names)
        self._con.register("_infoflow_batch", batch)
        try:
            sql = (
                f"INSERT INTO {table.name} (run_id, {columns}) SELECT ?, {columns} FROM _infoflow_batch "
                "ON CONFLICT DO NOTHING"
            )
            return self._con.execute(sql, [run_id]).fetchall()[0][0]
        finally:
            self._con.unregister("_infoflow_batch")

    def _touch(self, run_id: str) -> None:
        self._con.execute("UPDATE runs SET updated_at = ? WHERE run_id = ?", [_now(), run_id])
