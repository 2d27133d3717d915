"""Tables of the results store: columns, keys, DDL, and the meta table that marks a file as ours.

Every row table is keyed by ``(run_id, prompt_id, ...)``; inserting an existing key is a no-op, which is
what makes resuming and re-running safe. ``prompt_id`` is an integer (the dataset's id of the prompt).
Each experiment declares its own row table (``experiments.registry``); the schema version covers the tables
every store has (meta, runs, completed, errors). A store opened to write gains the row table of an experiment
added since it was made, and the value columns an experiment gained; one opened to read uses what it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from infoflow.store.errors import NotAStoreError, SchemaVersionError
from infoflow.store.manifest import package_version

if TYPE_CHECKING:  # the DuckDB backend is imported when a store is opened
    import duckdb

SCHEMA_VERSION = 2  # 2: runs have a name and tags
READABLE_VERSIONS = (1, 2)  # version 1 is read as is and upgraded in place when opened to write
FORMAT = "infoflow-results"
META_TABLE = "infoflow_meta"

ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "VARCHAR[]": pa.list_(pa.string()),
    "FLOAT[][]": pa.list_(pa.list_(pa.float32())),
}


@dataclass(frozen=True)
class Column:
    """One column: DuckDB type, part of the key, must be given (keys always must)."""

    name: str
    sql: str
    key: bool = False
    required: bool = False

    @property
    def arrow(self) -> pa.DataType:
        return ARROW_TYPES[self.sql]

    @property
    def is_json(self) -> bool:
        return self.sql == "JSON"


def key(name: str, sql: str) -> Column:
    """A key column (always given)."""
    return Column(name, sql, key=True, required=True)


def value(name: str, sql: str, required: bool = False) -> Column:
    """A value column."""
    return Column(name, sql, required=required)


@dataclass(frozen=True)
class Table:
    """A row table: ``run_id`` and ``prompt_id`` lead the key, ``columns`` are what callers give."""

    name: str
    columns: tuple[Column, ...]

    @property
    def all_columns(self) -> tuple[Column, ...]:
        return (key("run_id", "VARCHAR"), key("prompt_id", "BIGINT"), *self.columns)

    @property
    def input_columns(self) -> tuple[Column, ...]:
        """The columns a row may carry (everything but ``run_id``)."""
        return self.all_columns[1:]

    @property
    def key_names(self) -> list[str]:
        return [c.name for c in self.all_columns if c.key]

    def ddl(self) -> str:
        cols = [f"{c.name} {c.sql}{' NOT NULL' if c.required else ''}" for c in self.all_columns]
        return f"CREATE TABLE {self.name} ({', '.join(cols)}, PRIMARY KEY ({', '.join(self.key_names)}))"


def row_tables() -> dict[str, Table]:
    """The row table of every experiment, by kind (as ``experiments.registry`` declares them), and ``errors``:
    the one place the store learns which experiments there are."""
    from infoflow.experiments.registry import EXPERIMENTS

    return {**{kind: e.table for kind, e in EXPERIMENTS.items()}, ERRORS.name: ERRORS}


# Per-prompt errors: the reason a prompt has no rows.
ERRORS = Table("errors", (value("reason", "VARCHAR", required=True),))
# Prompts whose rows are all written (marked in the same transaction as their last rows).
COMPLETED = Table("completed", (value("completed_at", "TIMESTAMP"),))

RUNS_DDL = """CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,
    model_id VARCHAR NOT NULL,
    model_revision VARCHAR NOT NULL,
    dataset VARCHAR NOT NULL,
    dataset_filter VARCHAR NOT NULL,
    params JSON NOT NULL,
    n_prompts INTEGER,
    package_version VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    status VARCHAR NOT NULL,
    message VARCHAR,
    session VARCHAR,
    name VARCHAR,
    tags VARCHAR[]
)"""
# Prompts a process is computing (marked when their chunk starts, removed when their rows or error are written):
# marks left at the start of a run are of a process that ended while computing them. ``context`` is JSON (what
# the runner knows then: the chunk's size, predicted memory, the machine's out-of-memory kill count). Added
# without a version change: a writer creates it where it lacks, readers never read it.
IN_FLIGHT = "in_flight"
IN_FLIGHT_DDL = f"""CREATE TABLE IF NOT EXISTS {IN_FLIGHT} (
    run_id VARCHAR,
    prompt_id BIGINT,
    context JSON NOT NULL,
    PRIMARY KEY (run_id, prompt_id)
)"""
# What version 2 added to version 1 (to upgrade a store in place).
ADDED_IN_2 = ("ALTER TABLE runs ADD COLUMN name VARCHAR", "ALTER TABLE runs ADD COLUMN tags VARCHAR[]")


@dataclass(frozen=True)
class Schema:
    """What an opened store holds: its schema version and its row tables (by name, ``errors`` included)."""

    version: int
    tables: dict[str, Table]


def ensure_schema(con: duckdb.DuckDBPyConnection, path: Path, read_only: bool) -> Schema:
    """Create the schema in an empty database, or upgrade a store opened to write (version 1 to 2; the row
    tables of experiments added since, and the value columns an experiment gained); refuse a foreign database,
    a version this infoflow does not read, or a row table whose key is not its experiment's."""
    tables = _table_names(con)
    if not tables:
        if read_only:
            raise NotAStoreError(f"{path} is an empty DuckDB database, not an infoflow results store")
        _create(con)
        return Schema(SCHEMA_VERSION, row_tables())
    version = _check_version(con, path, tables)
    additions = _additions(con, path, tables)
    if not read_only and (version < SCHEMA_VERSION or additions):
        _upgrade(con, version, additions)
        return Schema(SCHEMA_VERSION, row_tables())
    return Schema(version, {name: t for name, t in row_tables().items() if name in tables})


def _additions(con: duckdb.DuckDBPyConnection, path: Path, tables: set[str]) -> list[str]:
    """The statements that give the store every experiment's row table with all its columns: new tables, and
    new value columns (null in the rows written before). A key column cannot be added: rows already written
    would have no key; such a store is refused."""
    statements = [] if IN_FLIGHT in tables else [IN_FLIGHT_DDL]
    for name, table in row_tables().items():
        if name not in tables:
            statements.append(table.ddl())
            continue
        query = "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() AND table_name = ?"
        present = {row[0] for row in con.execute(query, [name]).fetchall()}
        for column in table.all_columns:
            if column.name in present:
                continue
            if column.key:
                raise SchemaVersionError(
                    f"store {path}: its {name} rows are keyed without {column.name}, which this infoflow's {name} "
                    "experiment keys them by; read the store with the infoflow that wrote it"
                )
            statements.append(f"ALTER TABLE {name} ADD COLUMN {column.name} {column.sql}")
    return statements


def _table_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    query = "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
    return {row[0] for row in con.execute(query).fetchall()}


def _check_version(con: duckdb.DuckDBPyConnection, path: Path, tables: set[str]) -> int:
    """The version of the store in ``con``, if it is a store this infoflow reads; else ``NotAStoreError`` or
    ``SchemaVersionError``."""
    if META_TABLE not in tables:
        raise NotAStoreError(f"{path} is a DuckDB database but not an infoflow results store (no {META_TABLE} table)")
    meta = dict(con.execute(f"SELECT key, value FROM {META_TABLE}").fetchall())
    if meta.get("format") != FORMAT:
        raise NotAStoreError(f"{path} is not an infoflow results store (format {meta.get('format')!r})")
    version = meta.get("schema_version")
    if version not in [str(v) for v in READABLE_VERSIONS]:
        newer = version is not None and version.isdigit() and int(version) > SCHEMA_VERSION
        hint = " — upgrade infoflow to read it" if newer else ""
        raise SchemaVersionError(
            f"store {path} has schema version {version}; this infoflow ({package_version()}) "
            f"reads schema versions {', '.join(map(str, READABLE_VERSIONS))}{hint}"
        )
    return int(version)


def _upgrade(con: duckdb.DuckDBPyConnection, version: int, additions: list[str]) -> None:
    """Bring a store to this schema version and run ``additions`` (``_additions``), in one transaction."""
    from infoflow.store.connection import transaction

    with transaction(con):
        if version == 1:
            for statement in ADDED_IN_2:
                con.execute(statement)
            con.execute(f"UPDATE {META_TABLE} SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)])
        for statement in additions:
            con.execute(statement)


def _create(con: duckdb.DuckDBPyConnection) -> None:
    from infoflow.store.connection import transaction

    with transaction(con):
        con.execute(f"CREATE TABLE {META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
        con.execute(RUNS_DDL)
        for table in (*row_tables().values(), COMPLETED):
            con.execute(table.ddl())
        con.execute(IN_FLIGHT_DDL)
        meta = {"format": FORMAT, "schema_version": str(SCHEMA_VERSION), "created_by": f"infoflow {package_version()}"}
        con.executemany(f"INSERT INTO {META_TABLE} VALUES (?, ?)", list(meta.items()))
