"""The DuckDB backend of the results store: one file; every write is one transaction, so a crash loses at most
the batch being written, never half of it. One process writes while any number read (``store.connection``)."""

from __future__ import annotations

import difflib
import json
import os
import uuid
import warnings
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd
import pyarrow as pa

from infoflow.naming import derived_run_name
from infoflow.store.base import ResultsStore
from infoflow.store.connection import SharedConnection, WriterLock, check_path, live_writer_session, transaction
from infoflow.store.errors import StoreError, StoreWarning, UnknownRunError
from infoflow.store.manifest import Manifest, Run, RunStatus, canonical_json
from infoflow.store.rows import Rows, to_arrow
from infoflow.store.schema import COMPLETED, ERRORS, IN_FLIGHT, Schema, Table, ensure_schema

if TYPE_CHECKING:
    import polars

# Identifies this process: a run left 'running' by a process that no longer writes the store reads 'partial'.
_TOKEN = uuid.uuid4().hex

_RUNS_QUERY = """
SELECT r.run_id, {labels}, r.kind, r.model_id, r.model_revision, r.dataset, r.dataset_filter, r.params,
       r.n_prompts,
       (SELECT count(*) FROM completed c WHERE c.run_id = r.run_id) AS n_done,
       (SELECT count(*) FROM errors e WHERE e.run_id = r.run_id) AS n_errors,
       {rows} AS n_rows,
       CASE WHEN r.status = 'running' AND NOT coalesce(list_contains($live, r.session), false) THEN 'partial'
            ELSE r.status END AS status,
       r.message, r.package_version, r.created_at, r.updated_at
FROM runs r
"""
# by schema version (1: before names and tags)
LABELS = {1: "NULL::VARCHAR AS name, []::VARCHAR[] AS tags", 2: "r.name, coalesce(r.tags, []::VARCHAR[]) AS tags"}


def _session() -> str:
    return f"{os.getpid()}-{_TOKEN}"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _land(con: duckdb.DuckDBPyConnection, run_id: str, prompts: list[int]) -> None:
    """Remove the in-flight marks of prompts whose rows or error are written (in the same transaction)."""
    con.execute(
        f"DELETE FROM {IN_FLIGHT} WHERE run_id = ? AND prompt_id IN (SELECT unnest(?::BIGINT[]))", [run_id, prompts]
    )


class DuckDBStore(ResultsStore):
    """Runs and their rows in one DuckDB file."""

    def __init__(self, connection: SharedConnection, path: Path, read_only: bool, schema: Schema) -> None:
        self._connection = connection
        self.path = path
        self.read_only = read_only
        self._tables = schema.tables  # the row tables of the experiments this store has, and errors
        rows = " + ".join(
            f"(SELECT count(*) FROM {t} x WHERE x.run_id = r.run_id)" for t in self._tables if t != ERRORS.name
        )
        self._runs_query = _RUNS_QUERY.format(labels=LABELS[schema.version], rows=rows or "0")
        self._kinds: dict[str, str] = {}

    @classmethod
    def open_path(cls, path: Path, read_only: bool) -> DuckDBStore:
        check_path(path, read_only)
        connection = SharedConnection(path, read_only, None if read_only else WriterLock(path, _session()))
        try:
            with connection.use() as con:
                schema = ensure_schema(con, path, read_only)
        except duckdb.Error as e:
            connection.close()
            raise StoreError(f"cannot read results store {path}: {e}") from e
        except BaseException:
            connection.close()
            raise
        return cls(connection, path, read_only, schema)

    def close(self) -> None:
        self._connection.close()

    # --- runs ---

    def start_run(self, manifest: Manifest, *, name: str | None = None, tags: Iterable[str] = ()) -> Run:
        self._check_writable()
        run_id, m, now, tags = manifest.run_id, manifest, _now(), sorted(set(tags))
        self._row_table(m.kind)  # a kind without a row table is refused before anything is written
        with self._connection.use() as con, transaction(con):
            found = con.execute("SELECT package_version, tags FROM runs WHERE run_id = ?", [run_id]).fetchall()
            if not found:
                name = self._free_name(
                    con,
                    run_id,
                    name or derived_run_name(m.model_id, m.kind, dict(m.params)),
                    given=name is not None,
                )
                columns = "run_id, kind, model_id, model_revision, dataset, dataset_filter, params, n_prompts, "
                columns += "package_version, created_at, updated_at, status, session, name, tags"
                values: list[Any] = [run_id, m.kind, m.model_id, m.model_revision, m.dataset, m.dataset_filter]
                values += [canonical_json(m.params), m.n_prompts, m.package_version, now, now, "running", _session()]
                con.execute(f"INSERT INTO runs ({columns}) VALUES ({', '.join(['?'] * 15)})", [*values, name, tags])
                older = m.schema_1_run_id
                if older != run_id and con.execute("SELECT 1 FROM runs WHERE run_id = ?", [older]).fetchall():
                    warnings.warn(
                        f"run {older} of the same command, made before infoflow recorded dtype and device, is "
                        f"not resumed (its precision is unknown); this is a new run {run_id}",
                        StoreWarning,
                        stacklevel=2,
                    )
            else:
                if name is not None:
                    name = self._free_name(con, run_id, name, given=True)
                con.execute(
                    "UPDATE runs SET status = 'running', message = NULL, session = ?, updated_at = ?, "
                    "n_prompts = coalesce(?, n_prompts), name = coalesce(?, name), tags = ? WHERE run_id = ?",
                    [_session(), now, m.n_prompts, name, sorted({*(found[0][1] or []), *tags}), run_id],
                )
        if found and found[0][0] != manifest.package_version:
            warnings.warn(
                f"resuming run {run_id} created by infoflow {found[0][0]} with infoflow {manifest.package_version}",
                StoreWarning,
                stacklevel=2,
            )
        return self.run(run_id)

    def finish_run(self, run_id: str, status: RunStatus | str = RunStatus.COMPLETE, message: str | None = None) -> Run:
        self._check_writable()
        status = RunStatus(status)
        if status is RunStatus.RUNNING:
            raise ValueError("finish_run needs a final status, not 'running'")
        run_id, _ = self._resolve(run_id)
        with self._connection.use() as con:
            con.execute(
                "UPDATE runs SET status = ?, message = ?, updated_at = ? WHERE run_id = ?",
                [status.value, message, _now(), run_id],
            )
        return self.run(run_id)

    def run(self, run_id: str) -> Run:
        run_id, _ = self._resolve(run_id)
        row = self._runs("WHERE r.run_id = $run_id", run_id=run_id).iloc[0]
        manifest = Manifest(
            kind=row["kind"],
            model_id=row["model_id"],
            model_revision=row["model_revision"],
            dataset=row["dataset"],
            dataset_filter=row["dataset_filter"],
            params=json.loads(row["params"]),
            n_prompts=None if pd.isna(row["n_prompts"]) else int(row["n_prompts"]),
            package_version=row["package_version"],
        )
        created, updated = row["created_at"].to_pydatetime(), row["updated_at"].to_pydatetime()
        message = None if pd.isna(row["message"]) else row["message"]
        status = RunStatus(row["status"])
        return Run(run_id, manifest, status, created, updated, message, row["name"], tuple(row["tags"]))

    def runs(self) -> pd.DataFrame:
        return self._runs("ORDER BY r.created_at, r.run_id")

    def label_run(
        self, run_id: str, *, name: str | None = None, tags: Iterable[str] = (), untag: Iterable[str] = ()
    ) -> Run:
        self._check_writable()
        run = self.run(run_id)
        with self._connection.use() as con, transaction(con):
            if name is not None:
                name = self._free_name(con, run.run_id, name, given=True)
            new_tags = sorted({*run.tags, *tags} - set(untag))
            con.execute(
                "UPDATE runs SET name = coalesce(?, name), tags = ? WHERE run_id = ?", [name, new_tags, run.run_id]
            )
        return self.run(run.run_id)

    def delete_run(self, run_id: str) -> None:
        self._check_writable()
        run_id, _ = self._resolve(run_id)
        with self._connection.use() as con, transaction(con):
            for table in (*self._tables, COMPLETED.name, IN_FLIGHT, "runs"):
                con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        del self._kinds[run_id]

    # --- rows ---

    def add_rows(self, run_id: str, rows: Rows, *, done: Iterable[int] | None = None) -> int:
        self._check_writable()
        run_id, kind = self._resolve(run_id)
        table = self._row_table(kind)
        batch = to_arrow(table, rows)
        prompts = batch["prompt_id"].unique().to_pylist() if done is None else [int(p) for p in done]

        def write(con: duckdb.DuckDBPyConnection) -> int:
            added = self._insert(con, table, run_id, batch)
            if prompts:
                con.execute(
                    f"INSERT INTO {COMPLETED.name} SELECT ?, unnest(?::BIGINT[]), ? ON CONFLICT DO NOTHING",
                    [run_id, prompts, _now()],
                )
                _land(con, run_id, prompts)
            self._touch(con, run_id)
            return added

        return self._connection.write(write)

    def add_errors(self, run_id: str, errors: Mapping[int, str]) -> int:
        self._check_writable()
        run_id, _ = self._resolve(run_id)
        batch = to_arrow(ERRORS, [{"prompt_id": p, "reason": r} for p, r in errors.items()])

        def write(con: duckdb.DuckDBPyConnection) -> int:
            added = self._insert(con, ERRORS, run_id, batch)
            _land(con, run_id, list(errors))
            self._touch(con, run_id)
            return added

        return self._connection.write(write)

    def mark_in_flight(self, run_id: str, prompt_ids: Iterable[int], context: str) -> None:
        self._check_writable()
        run_id, _ = self._resolve(run_id)
        prompts = [int(p) for p in prompt_ids]

        def write(con: duckdb.DuckDBPyConnection) -> int:
            con.execute(
                f"INSERT OR REPLACE INTO {IN_FLIGHT} SELECT ?, unnest(?::BIGINT[]), ?", [run_id, prompts, context]
            )
            return 0

        self._connection.write(write)

    def in_flight(self, run_id: str) -> dict[int, str]:
        run_id, _ = self._resolve(run_id)
        with self._connection.use() as con:
            rows = con.execute(f"SELECT prompt_id, context FROM {IN_FLIGHT} WHERE run_id = ?", [run_id]).fetchall()
        return {int(prompt): str(context) for prompt, context in rows}

    def clear_in_flight(self, run_id: str) -> None:
        self._check_writable()
        run_id, _ = self._resolve(run_id)

        def write(con: duckdb.DuckDBPyConnection) -> int:
            con.execute(f"DELETE FROM {IN_FLIGHT} WHERE run_id = ?", [run_id])
            return 0

        self._connection.write(write)

    def completed_prompts(self, run_id: str, *, include_errors: bool = True) -> set[int]:
        run_id, _ = self._resolve(run_id)
        query = f"SELECT prompt_id FROM {COMPLETED.name} WHERE run_id = $run_id"
        if include_errors:
            query += " UNION SELECT prompt_id FROM errors WHERE run_id = $run_id"
        with self._connection.use() as con:
            return {row[0] for row in con.execute(query, {"run_id": run_id}).fetchall()}

    def done_keys(self, run_id: str, table: str | None = None) -> set[tuple[Any, ...]]:
        run_id, spec = self._table(run_id, table)
        columns = ", ".join(spec.key_names[1:])
        with self._connection.use() as con:
            return set(con.execute(f"SELECT {columns} FROM {spec.name} WHERE run_id = ?", [run_id]).fetchall())

    def frame(self, run_id: str, table: str | None = None, *, polars: bool = False) -> pd.DataFrame | polars.DataFrame:
        query, params = self._select(run_id, table)
        with self._connection.use() as con:
            relation = con.sql(query, params=params)
            return relation.pl() if polars else relation.df()

    def arrow(self, run_id: str, table: str | None = None) -> pa.Table:
        query, params = self._select(run_id, table)
        with self._connection.use() as con:
            return con.sql(query, params=params).to_arrow_table()

    # --- internals ---

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"store {self.path} is open read-only")

    def _runs(self, where: str, **params: str) -> pd.DataFrame:
        """Rows of the runs query; a run without a stored name (made before names) gets its derived name."""
        live = [_session(), *filter(None, [live_writer_session(self.path)])]
        with self._connection.use() as con:
            frame = con.execute(self._runs_query + where, {"live": live, **params}).df()
        unnamed = frame["name"].isna()
        frame.loc[unnamed, "name"] = [
            derived_run_name(m, k, json.loads(p))
            for m, k, p in frame.loc[unnamed, ["model_id", "kind", "params"]].itertuples(index=False)
        ]
        frame["tags"] = [list(t) for t in frame["tags"]]
        return frame

    def _free_name(self, con: duckdb.DuckDBPyConnection, run_id: str, name: str, *, given: bool) -> str:
        """``name`` if no other run has it; a derived name gets a number (`` (2)``), a given one is refused."""
        query = "SELECT name FROM runs WHERE run_id <> ? AND name IS NOT NULL"
        taken = {r[0] for r in con.execute(query, [run_id]).fetchall()}
        if name not in taken:
            return name
        if given:
            (other,) = con.execute("SELECT run_id FROM runs WHERE name = ?", [name]).fetchone() or ("?",)
            raise StoreError(f"run name {name!r} is taken by run {other} in store {self.path}; choose another name")
        number = 2
        while f"{name} ({number})" in taken:
            number += 1
        return f"{name} ({number})"

    def _resolve(self, run_id: str) -> tuple[str, str]:
        """The full id and kind of the run with this id, name or unique id prefix (4 characters or more)."""
        if run_id in self._kinds:
            return run_id, self._kinds[run_id]
        with self._connection.use() as con:
            found = con.execute("SELECT run_id, kind FROM runs WHERE starts_with(run_id, ?)", [run_id]).fetchall()
            exact = [row for row in found if row[0] == run_id]
            names = self._runs("WHERE r.run_id IS NOT NULL")[["run_id", "kind", "name"]]
        named = [(r, k) for r, k, n in names.itertuples(index=False) if n == run_id]
        matches = exact or named or (found if len(run_id) >= 4 else [])
        if len(matches) != 1:
            if matches:
                what = "matches several runs: " + ", ".join(r for r, _ in matches) + "; give more of the id"
            else:
                close = difflib.get_close_matches(run_id, list(names["name"]), n=3)
                what = "matches no run (by id, id prefix or name)" + (f"; did you mean {close}?" if close else "")
            raise UnknownRunError(f"run {run_id!r} {what} in store {self.path}")
        full_id, kind = matches[0]
        self._kinds[full_id] = kind
        return full_id, kind

    def _table(self, run_id: str, table: str | None) -> tuple[str, Table]:
        run_id, kind = self._resolve(run_id)
        return run_id, self._row_table(table or kind)

    def _row_table(self, name: str) -> Table:
        """The row table ``name`` (an experiment's kind, or errors); a ``ValueError`` naming the tables if this
        store has none of that name (an experiment this infoflow does not know)."""
        if name not in self._tables:
            raise ValueError(f"no row table {name!r} in store {self.path}; tables: {sorted(self._tables)}")
        return self._tables[name]

    def _select(self, run_id: str, table: str | None) -> tuple[str, list[str]]:
        """The query of ``frame`` and ``arrow`` and its parameters."""
        run_id, spec = self._table(run_id, table)
        return f"SELECT * FROM {spec.name} WHERE run_id = ? ORDER BY {', '.join(spec.key_names)}", [run_id]

    @staticmethod
    def _insert(con: duckdb.DuckDBPyConnection, table: Table, run_id: str, batch: pa.Table) -> int:
        columns = ", ".join(batch.column_names)
        con.register("_infoflow_batch", batch)
        try:
            sql = (
                f"INSERT INTO {table.name} (run_id, {columns}) SELECT ?, {columns} FROM _infoflow_batch "
                "ON CONFLICT DO NOTHING"
            )
            return con.execute(sql, [run_id]).fetchall()[0][0]
        finally:
            con.unregister("_infoflow_batch")

    @staticmethod
    def _touch(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
        con.execute("UPDATE runs SET updated_at = ? WHERE run_id = ?", [_now(), run_id])
