"""Opening the results store for a page: read-only to browse, writable to launch or delete, clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infoflow.app.errors import AppError
from infoflow.store import ResultsStore, default_store_path


def resolve_store_path(text: str | Path | None) -> Path:
    """The store file the app reads: the given path, else ``$INFOFLOW_STORE`` or ``./infoflow-results.duckdb``."""
    return Path(text).expanduser() if text not in (None, "") else default_store_path()


def missing_store_message(path: Path) -> str:
    return (
        f"No results store at {path}. Start a run on the Launch page, run `infoflow demo` or "
        "`infoflow info-flow ... --store FILE`, or enter another store file in the sidebar."
    )


@contextmanager
def open_store(path: Path, *, write: bool = False) -> Iterator[ResultsStore]:
    """The store at ``path``, opened for this block only (DuckDB: one writer or several readers at a time).

    Reading a store that does not exist raises ``AppError`` with what to do; writing creates it.
    """
    if not write and not path.exists():
        raise AppError(missing_store_message(path))
    with ResultsStore.open(path, read_only=not write) as store:
        yield store
