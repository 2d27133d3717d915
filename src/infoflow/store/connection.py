"""Sharing one DuckDB file between a writing process and readers; opening it with clear errors; transactions.

DuckDB lets one process open a file to write, or several processes open it to read, never both at once. So
that the web app and ``infoflow runs`` can read a store while a run writes it, nobody holds the file for long:

- a reader opens the file for each operation and closes it right after; while the writer holds it, the reader
  says so (it touches the writer's lock file) and retries for up to ``READ_WAIT`` seconds;
- one process at a time may write (it holds ``<store>.lock`` while its store is open), but it holds DuckDB's
  own lock only while nobody wants to read: a watcher thread closes its connection between two operations
  when a reader has asked within the last ``READERS_LINGER`` seconds, and the next operation opens it again.
  With no reader around the connection stays open, so writes cost what they always did.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import duckdb

from infoflow.store.errors import NotAStoreError, StoreError, StoreLockedError

READ_WAIT = 15.0  # seconds a reader waits for a writer to let go of the file
OPEN_WAIT = 3.0  # seconds a writer waits for readers when it opens the store (a foreign holder: refused soon)
WRITE_WAIT = 120.0  # seconds a writer waits for readers later (its computed rows must not be lost)
READERS_LINGER = 30.0  # seconds after a reader's last visit during which the writer lets go between operations
WATCH_INTERVAL = 0.05  # seconds between the writer's looks at its lock file
RETRY_INTERVAL = 0.02  # seconds between attempts to open a held file


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


class WriterLock:
    """``<store>.lock``, locked (``flock``) by the one process writing the store; it records that process's pid
    and session, and its modification time is when a reader last asked for the file. Shared by the stores of
    one process that write the same file."""

    _held: ClassVar[dict[Path, tuple[int, int]]] = {}  # lock file -> (descriptor, number of stores using it)
    _guard = threading.Lock()

    def __init__(self, path: Path, session: str) -> None:
        self.path = lock_path(path).resolve()
        with self._guard:
            fd, users = self._held.get(self.path, (None, 0))
            if fd is None:
                fd = self._acquire(path, session)
            self._held[self.path] = (fd, users + 1)
        self.since = time.time()

    def _acquire(self, store: Path, session: str) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + 1.0  # a reader may hold a shared lock for a moment to see who writes
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = read_holder(self.path) or {}
                    os.close(fd)
                    who = f"another process (pid {holder['pid']})" if "pid" in holder else "another process"
                    raise StoreLockedError(
                        f"store {store} is in use by {who} that writes to it (one process writes a store at a "
                        "time; any number read) — wait for it to finish or use another --store"
                    ) from None
                time.sleep(RETRY_INTERVAL)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "session": session}).encode())
        return fd

    def release(self) -> None:
        with self._guard:
            fd, users = self._held.pop(self.path)
            if users > 1:
                self._held[self.path] = (fd, users - 1)
                return
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def readers_waiting(self) -> bool:
        """Whether a reader asked for the file since this lock was taken, within the last ``READERS_LINGER`` s."""
        try:
            asked = self.path.stat().st_mtime
        except OSError:
            return False
        return asked > self.since and time.time() - asked < READERS_LINGER


def read_holder(path: Path) -> dict | None:
    """What a lock file says about its writer (pid, session), or None."""
    try:
        return json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None


def live_writer_session(path: Path) -> str | None:
    """The session of the process writing the store at ``path`` now, or None if no process writes it."""
    lock = lock_path(path).resolve()
    if lock in WriterLock._held:
        return (read_holder(lock) or {}).get("session")
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return (read_holder(lock) or {}).get("session")
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def ask_writer_to_let_go(path: Path) -> None:
    """Tell the process writing ``path`` (if any) that a reader wants the file: touch its lock file."""
    with contextlib.suppress(OSError):  # no writer ever, or a read-only folder: nobody to tell
        os.utime(lock_path(path))


class SharedConnection:
    """The connection of one store: opened when an operation needs it; a reader's is closed after each
    operation, a writer's when a reader asks (see the module docstring). For one thread at a time, plus the
    writer's watcher."""

    def __init__(self, path: Path, read_only: bool, writer: WriterLock | None) -> None:
        self.path = path
        self.read_only = read_only
        self.writer = writer
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.RLock()
        self._depth = 0
        self._waited = False  # a writer waits OPEN_WAIT s for its first connection, WRITE_WAIT s later
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if writer is not None:
            self._watcher = threading.Thread(target=self._watch, name=f"infoflow-store-{path.name}", daemon=True)
            self._watcher.start()

    @contextmanager
    def use(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection for one operation (nested uses share it)."""
        with self._lock:
            if self._con is None:
                wait = READ_WAIT if self.read_only else WRITE_WAIT if self._waited else OPEN_WAIT
                self._con = connect(self.path, self.read_only, wait)
                self._waited = True
            self._depth += 1
            try:
                yield self._con
            finally:
                self._depth -= 1
                if self.read_only and self._depth == 0:
                    self._let_go()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        with self._lock:
            self._let_go()
        if self.writer is not None:
            self.writer.release()
            self.writer = None

    def _let_go(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def _watch(self) -> None:
        assert self.writer is not None
        while not self._stop.wait(WATCH_INTERVAL):
            if self._con is not None and self.writer.readers_waiting() and self._lock.acquire(blocking=False):
                try:
                    if self._depth == 0:
                        self._let_go()
                finally:
                    self._lock.release()


def check_path(path: Path, read_only: bool) -> None:
    """Refuse a folder, or a missing store to read; make the folder of a new store to write."""
    if path.is_dir():
        raise NotAStoreError(f"{path} is a directory, not an infoflow results store")
    if read_only and not path.exists():
        raise StoreError(f"no results store at {path}")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)  # a new store in a new folder, as `--store out/x.duckdb`


def connect(path: Path, read_only: bool, wait: float) -> duckdb.DuckDBPyConnection:
    """Open ``path`` (writable: creating its folder if needed), waiting up to ``wait`` seconds while another
    process (or this one, in the other mode) holds it; a foreign file, a missing store or a lock held longer
    raise a ``StoreError``."""
    check_path(path, read_only)
    deadline = time.monotonic() + wait
    while True:
        try:
            return _connect_once(path, read_only)
        except StoreLockedError:
            if time.monotonic() > deadline:
                raise
            if read_only:
                ask_writer_to_let_go(path)
            time.sleep(RETRY_INTERVAL)


def _connect_once(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.ConnectionException as e:  # same file open in this process in the other mode
        raise StoreLockedError(
            f"store {path} is open in this process with read_only={not read_only} and was not closed in time"
        ) from e
    except duckdb.Error as e:
        message = str(e)
        if "not a valid DuckDB database" in message and not read_only and _remove_if_empty(path):
            return _connect_once(path, read_only)  # an empty file: what a crash while creating the store leaves
        if "not a valid DuckDB database" in message:
            raise NotAStoreError(f"{path} is not a DuckDB database, so not an infoflow results store") from e
        if "Could not set lock" in message or "Conflicting lock" in message:
            pid = re.search(r"PID (\d+)", message)
            who = f"another process (pid {pid.group(1)})" if pid else "another process"
            raise StoreLockedError(
                f"store {path} is in use by {who} that did not let go in time "
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
