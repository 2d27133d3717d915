"""Tabular files (CSV, JSON, JSONL, Parquet) into fact prompts, with mappable column names."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from infoflow.data.errors import DatasetError
from infoflow.data.prompts import FactPrompt
from infoflow.errors import with_cli_message

FIELDS = ("prompt", "subject", "target", "relation")
REQUIRED = ("prompt", "subject", "target")
SPLIT_COLUMN = "split"
SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")

Record = dict[str, Any]


@dataclass(frozen=True)
class Table:
    """Rows of a file with the column names in file order; ``source`` names the file in errors."""

    columns: list[str]
    rows: list[Record]
    source: str


def read_table(path: Path) -> Table:
    """Read a CSV (all values text), JSON (a list of objects), JSONL or Parquet file."""
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    try:
        return _read_table(path)
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, pa.ArrowException) as error:
        raise DatasetError(f"{path}: cannot read it as a {path.suffix.lower()} dataset: {error}") from error


def _read_table(path: Path) -> Table:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        table = pq.read_table(path)
        return Table(table.column_names, table.to_pylist(), str(path))
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            return Table(list(reader.fieldnames or []), rows, str(path))
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    elif suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise DatasetError(f"{path}: a JSON dataset must be a list of objects, got {type(rows).__name__}")
    else:
        raise DatasetError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(SUFFIXES)}")
    if not all(isinstance(row, dict) for row in rows):
        raise DatasetError(f"{path}: every row must be a JSON object")
    return Table(list(dict.fromkeys(key for row in rows for key in row)), rows, str(path))


def table_to_prompts(
    table: Table, columns: Mapping[str, str] | None = None, *, split: str | None = None
) -> list[FactPrompt]:
    """Map columns to ``FactPrompt`` fields; ``prompt_id`` is the row index, the other columns go to ``extras``.

    ``columns`` maps field names (prompt, subject, target, relation) to the file's column names; unmapped
    fields use their own name, and ``relation`` is optional unless mapped. ``split`` keeps the rows whose
    ``split`` column equals it (ids stay the row indices of the whole file).
    """
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(FIELDS))
    if unknown:
        raise DatasetError(f"columns= keys must be among {list(FIELDS)}, got {unknown}")
    mapping = {name: columns.get(name, name) for name in FIELDS}
    needed = [*REQUIRED, *(["relation"] if "relation" in columns else [])]
    if split is not None:
        needed.append(SPLIT_COLUMN)
        mapping[SPLIT_COLUMN] = SPLIT_COLUMN
    missing = [f"{mapping[name]!r} (for {name})" for name in needed if mapping[name] not in table.columns]
    if missing:
        problem = f"{table.source}: missing column(s) {', '.join(missing)}; available columns: {table.columns}."
        raise with_cli_message(
            DatasetError(f'{problem} Map them with columns={{"prompt": ..., "subject": ..., "target": ...}}.'),
            f"{problem} Rename the file's columns to {', '.join(REQUIRED)} (each prompt's subject and the target "
            "that follows it).",
        )
    relation_column = mapping["relation"] if mapping["relation"] in table.columns else None
    used = {mapping[name] for name in REQUIRED} | {relation_column}
    prompts = []
    for i, row in enumerate(table.rows):
        if split is not None and row.get(SPLIT_COLUMN) != split:
            continue
        text = {name: _text(table, i, mapping[name]) for name in REQUIRED}
        relation = row.get(relation_column) if relation_column else None
        relation = None if relation is None else str(relation)
        extras = {key: value for key, value in row.items() if key not in used}
        prompts.append(FactPrompt(prompt_id=i, **text, relation=relation, extras=extras))
    return prompts


def _text(table: Table, i: int, column: str) -> str:
    value = table.rows[i].get(column)
    if not isinstance(value, str):
        raise DatasetError(f"{table.source}: row {i}, column {column!r} must be text, got {value!r}")
    return value
