"""Export writers: a run's rows (an Arrow table) to a file. Add a format by adding a writer to ``WRITERS``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class Export:
    """What a writer gets: the rows, the run (manifest, status, ...) as JSON text, and the JSON-text columns."""

    rows: pa.Table
    run_json: str
    json_columns: tuple[str, ...] = ()


def write_parquet(export: Export, path: Path) -> None:
    """Parquet, with the run in the file's key-value metadata under ``infoflow.run``."""
    import pyarrow.parquet as pq

    metadata = {**(export.rows.schema.metadata or {}), b"infoflow.run": export.run_json.encode()}
    pq.write_table(export.rows.replace_schema_metadata(metadata), path)


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _json_value(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def write_csv(export: Export, path: Path) -> None:
    """CSV with a header; list columns (attention matrices, tokens) as JSON text; NaN and null as empty cells."""
    frame = export.rows.to_pandas()
    for field in export.rows.schema:
        if pa.types.is_list(field.type):
            values = export.rows.column(field.name).to_pylist()
            frame[field.name] = [None if v is None else json.dumps(v) for v in values]
    frame.to_csv(path, index=False)


def write_jsonl(export: Export, path: Path) -> None:
    """One JSON object per row; JSON-text columns as nested values; NaN as null (JSON has no NaN)."""
    with path.open("w", encoding="utf-8") as file:
        for row in export.rows.to_pylist():
            record = {
                k: json.loads(v) if k in export.json_columns and v is not None else _plain(v) for k, v in row.items()
            }
            file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


Writer = Callable[[Export, Path], None]
WRITERS: Mapping[str, Writer] = {"parquet": write_parquet, "csv": write_csv, "jsonl": write_jsonl}
