"""Opening a DuckDB file with clear errors, and all-or-nothing transactions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from infoflow.store.errors import NotAStoreError, StoreError, StoreLockedError


def connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    """Open ``path`` (writable: creating its folder if needed); a foreign file, a missing store or a lock held
    elsewhere raise a ``StoreError``."""
    if path.is_dir():
        raise NotAStoreError(f"{path} is a directory, not an infoflow results store")
    if read_only and not path.exists():
        raise StoreError(f"no results store at {path}")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)  # a new store in a new folder, as `--store out/x.duckdb`
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.ConnectionException as e:  # same file already open in this process with another read_only
        raise StoreLockedError(
            f"store {path} is already open in this process with read_only={not read_only}; close it first"
        ) from e
    except duckdb.Error as e:
        message = str(e)
        if "not a valid DuckDB database" in message and not read_only and _remove_if_empty(path):
            return connect(path, read_only)  # an empty file: what a crash while creating the store leaves
        if "not a valid DuckDB database" in message:
            raise NotAStoreError(f"{path} is not a DuckDB database, so not an infoflow results store") from e
        if "Could not set lock" in message or "Conflicting lock" in message:
            pid = re.search(r"PID (\d+)", message)
            who = f"another process (pid {pid.group(1)})" if pid else "another process"
            raise StoreLockedError(
                f"store {path} is in use by {who} (DuckDB lets one process write, or several read, at a time) "
                "— wait for it to finish or use another --store"
            ) from e
        raise StoreError(f"cannot open results store {path}: {message}") from e


def _remove_if_empty(path: Path) -> bool:
    """Remove ``path`` if it is an empty file (no one holds it: DuckDB reports a lock before a bad header)."""
    try:
        if path.stat().st_size != 0:
            return False
        path.unlink()
    except FileNotFoundError:
        pass
    return True


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Commit everything in the block, or nothing."""
    con.begin()
    try:
        yield
    except BaseException:
        con.rollback()
        raise
    con.commit()
