"""Tables of the results store: columns, keys, DDL, and the meta table that marks a file as ours.

Every row table is keyed by ``(run_id, prompt_id, ...)``; inserting an existing key is a no-op, which is
what makes resuming and re-running safe. ``prompt_id`` is an integer (the dataset's id of the prompt).
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


def _key(name: str, sql: str) -> Column:
    return Column(name, sql, key=True, required=True)


def _value(name: str, sql: str, required: bool = False) -> Column:
    return Column(name, sql, required=required)


@dataclass(frozen=True)
class Table:
    """A row table: ``run_id`` and ``prompt_id`` lead the key, ``columns`` are what callers give."""

    name: str
    columns: tuple[Column, ...]

    @property
    def all_columns(self) -> tuple[Column, ...]:
        return (_key("run_id", "VARCHAR"), _key("prompt_id", "BIGINT"), *self.columns)

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


# Row tables, one per experiment kind (same names as ExperimentKind values), and per-prompt errors.
TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "evaluate",
            (
                _value("p0", "DOUBLE", required=True),
                _value("rank", "INTEGER", required=True),
                _value("correct", "BOOLEAN", required=True),
                _value("target_token", "VARCHAR"),
                _value("target_token_id", "INTEGER"),
                _value("top_tokens", "JSON"),
                _value("prompt", "VARCHAR"),
                _value("subject", "VARCHAR"),
                _value("target", "VARCHAR"),
            ),
        ),
        Table(
            "info_flow",
            (
                _key("target", "VARCHAR"),
                _key("source", "VARCHAR"),
                _key("feature_category", "VARCHAR"),
                _key("window_size", "INTEGER"),
                _key("window_start", "INTEGER"),
                _value("p", "DOUBLE", required=True),
                _value("diff", "DOUBLE", required=True),
                _value("hit", "BOOLEAN", required=True),
                _value("p0", "DOUBLE"),
            ),
        ),
        Table(
            "heatmap",
            (
                _key("window_size", "INTEGER"),
                _key("window_start", "INTEGER"),
                _key("position", "INTEGER"),
                _value("p", "DOUBLE", required=True),
                _value("token", "VARCHAR"),
                _value("p0", "DOUBLE"),
            ),
        ),
        Table(
            "attention",
            (
                _key("layer", "INTEGER"),
                # a channel/head index as text, or the name of an aggregate over features ("mean", "norm", ...)
                _key("feature", "VARCHAR"),
                _value("matrix", "FLOAT[][]", required=True),  # [target position][source position]
                _value("tokens", "VARCHAR[]"),
            ),
        ),
        Table("errors", (_value("reason", "VARCHAR", required=True),)),
    )
}

# Prompts whose rows are all written (marked in the same transaction as their last rows).
COMPLETED = Table("completed", (_value("completed_at", "TIMESTAMP"),))

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
# What version 2 added to version 1 (to upgrade a store in place).
ADDED_IN_2 = ("ALTER TABLE runs ADD COLUMN name VARCHAR", "ALTER TABLE runs ADD COLUMN tags VARCHAR[]")


def ensure_schema(con: duckdb.DuckDBPyConnection, path: Path, read_only: bool) -> int:
    """Create the schema in an empty database, or upgrade a version 1 store opened to write; refuse a foreign
    database or a version this infoflow does not read. Returns the store's schema version."""
    from infoflow.store.connection import transaction

    query = "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
    tables = {row[0] for row in con.execute(query).fetchall()}
    if not tables:
        if read_only:
            raise NotAStoreError(f"{path} is an empty DuckDB database, not an infoflow results store")
        _create(con)
        return SCHEMA_VERSION
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
    if version == "1" and not read_only:
        with transaction(con):
            for statement in ADDED_IN_2:
                con.execute(statement)
            con.execute(f"UPDATE {META_TABLE} SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)])
        return SCHEMA_VERSION
    return int(version)


def _create(con: duckdb.DuckDBPyConnection) -> None:
    from infoflow.store.connection import transaction

    with transaction(con):
        con.execute(f"CREATE TABLE {META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
        con.execute(RUNS_DDL)
        for table in (*TABLES.values(), COMPLETED):
            con.execute(table.ddl())
        meta = {"format": FORMAT, "schema_version": str(SCHEMA_VERSION), "created_by": f"infoflow {package_version()}"}
        con.executemany(f"INSERT INTO {META_TABLE} VALUES (?, ?)", list(meta.items()))
