"""Turn rows given as dicts or a DataFrame into an Arrow table with a row table's exact types."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa

from infoflow.store.manifest import canonical_json
from infoflow.store.schema import Column, Table

Rows: TypeAlias = pd.DataFrame | Iterable[Mapping[str, Any]]


def to_arrow(table: Table, rows: Rows) -> pa.Table:
    """Validate ``rows`` against ``table`` (no unknown columns, required ones present and not null).

    Missing optional columns become nulls; JSON columns take any JSON-serialisable value (a ``str`` is
    taken as JSON text already); NaN stays NaN (it is a value, not a missing one).
    """
    columns = _columns(rows)
    allowed = [c.name for c in table.input_columns]
    unknown = sorted(set(columns) - set(allowed))
    if unknown:
        raise ValueError(f"{table.name} rows have unknown columns {unknown}; allowed: {allowed}")
    missing = [c.name for c in table.input_columns if c.required and c.name not in columns]
    if missing:
        raise ValueError(f"{table.name} rows lack required columns {missing}")
    n = len(next(iter(columns.values()))) if columns else 0
    arrays = [_array(table.name, c, columns.get(c.name), n) for c in table.input_columns]
    return pa.Table.from_arrays(arrays, names=allowed)


def _columns(rows: Rows) -> dict[str, Any]:
    if isinstance(rows, pd.DataFrame):
        return {str(name): rows[name] for name in rows.columns}
    records: list[Mapping[str, Any]] = list(rows)
    names = dict.fromkeys(name for record in records for name in record)
    return {name: [record.get(name) for record in records] for name in names}


def _array(table: str, column: Column, values: Any, n: int) -> pa.Array:
    if values is None:
        return pa.nulls(n, column.arrow)
    try:
        if column.is_json:
            values = [v if v is None or isinstance(v, str) else canonical_json(v) for v in values]
        elif pa.types.is_list(column.arrow):
            values = [v.tolist() if isinstance(v, np.ndarray) else v for v in values]
        array = pa.array(values, type=column.arrow, from_pandas=False)
    except (pa.ArrowException, TypeError, ValueError) as e:
        raise ValueError(f"{table}.{column.name}: cannot store values as {column.sql}: {e}") from e
    if column.required and array.null_count:
        raise ValueError(f"{table}.{column.name} is required but {array.null_count} rows have no value")
    return array
