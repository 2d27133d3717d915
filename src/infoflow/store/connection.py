"""Sharing one DuckDB file between a writing process and readers; opening it with clear errors; transactions.

DuckDB lets one process open a file to write, or several processes open it to read, never both at once. So
that the web app and ``infoflow runs`` can read a store while a run writes it, each holds the file only until
the other side asks for it:

- one process at a time writes a store: it holds ``<store>.lock`` (``flock``) while its store is open;
- every open store (a writer's or a reader's) keeps its DuckDB connection between operations, and a watcher
  thread closes it between two operations when the other side asks; the next operation opens it again;
- a reader that finds the file held asks the writer by touching ``<store>.lock``; a writer that finds it
  held asks the readers by touching ``<store>.readers``; each retries until the file is free (a reader for
  up to ``READ_WAIT`` seconds, a writer for up to ``WRITE_WAIT``);
- a writer's rows do not wait: a chunk that finds the file held by a reader is kept in memory and written,
  in order, by the store's next operation (the next chunk, the end of the run, or closing the store); the
  writer asks the readers for the file once it has kept writes for ``KEEP_WRITES`` seconds.

With nobody asking, connections stay open and cost what they always did; each request costs the holder one
close and one open.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import duckdb

from infoflow.errors import with_cli_message
from infoflow.store.errors import NotAStoreError, StoreClosedError, StoreError, StoreLockedError, StoreWriteError

Write = Callable[[duckdb.DuckDBPyConnection], int]  # one transaction's work; returns the rows it added

READ_WAIT = 15.0  # seconds a reader waits for a writer to let go of the file
OPEN_WAIT = 3.0  # seconds a writer waits for readers when it opens the store (a foreign holder: refused soon)
WRITE_WAIT = 120.0  # seconds a writer waits for readers later (its computed rows must not be lost)
READER_TURN = 0.5  # seconds after letting go for a reader during which a writer keeps its writes (the reader's turn)
KEEP_WRITES = 2.0  # seconds a writer keeps its writes for a reader before it asks for the file
WATCH_INTERVAL = 0.05  # seconds between a watcher's looks at the file the other side touches to ask
RETRY_INTERVAL = 0.02  # seconds between attempts to open a held file


def lock_path(path: Path) -> Path:
    """The writer's lock; readers touch it to ask the writer for the file."""
    return path.with_name(path.name + ".lock")


def readers_path(path: Path) -> Path:
    """What the writer touches to ask the readers for the file."""
    return path.with_name(path.name + ".readers")


def asked_at(signal: Path) -> float:
    """When the other side last asked (the signal file's modification time), 0 if never."""
    try:
        return signal.stat().st_mtime
    except OSError:
        return 0.0


def ask(signal: Path, create: bool) -> None:
    """Ask the other side for the file: touch ``signal`` (creating it if ``create``)."""
    with contextlib.suppress(OSError):  # no writer ever, or a read-only folder: nobody to ask
        if create:
            signal.touch()
        else:
            os.utime(signal)


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


class SharedConnection:
    """The connection of one store: opened when an operation needs it, kept until the other side asks for the
    file (see the module docstring). For one thread at a time, plus the store's watcher."""

    def __init__(self, path: Path, read_only: bool, writer: WriterLock | None) -> None:
        self.path = path
        self.read_only = read_only
        self.writer = writer
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.RLock()
        self._depth = 0
        self._waited = False  # a writer waits OPEN_WAIT s for its first connection, WRITE_WAIT s later
        self._pending: list[Write] = []  # writes kept while a reader held the file
        self._kept_since = 0.0  # when the oldest of them was kept
        self._let_go_at = 0.0  # when the watcher last let go of the file for the other side
        # a writer is asked through its lock file and asks through the readers' file; a reader the other way round
        self._asked, self._ask = (
            (readers_path(path), lock_path(path)) if read_only else (lock_path(path), readers_path(path))
        )
        self._closed = False
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name=f"infoflow-store-{path.name}", daemon=True)
        self._watcher.start()

    @contextmanager
    def use(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection for one operation (nested uses share it), after the writes kept for later."""
        self._check_open()
        with self._lock:
            if self._con is None:
                wait = READ_WAIT if self.read_only else WRITE_WAIT if self._waited else OPEN_WAIT
                self._con = connect(self.path, self.read_only, wait, lambda: ask(self._ask, create=not self.read_only))
                self._waited = True
            self._depth += 1
            try:
                self._flush(self._con)
                yield self._con
            finally:
                self._depth -= 1

    def write(self, operation: Write) -> int:
        """Run ``operation`` (one transaction) now if the file can be had at once; else keep it, in order, for
        the next operation (a run computes on instead of waiting for a reader), asking the readers for the file
        once writes have been kept for ``KEEP_WRITES`` seconds. Returns what the writes run now return, summed
        (0 if this one was kept)."""
        self._check_open()
        if not self._pending:
            self._kept_since = time.monotonic()
        self._pending.append(operation)
        if not self._lock.acquire(blocking=False):  # the watcher is letting go of the file right now
            return 0
        try:
            if self._con is None:
                if time.monotonic() - self._let_go_at < READER_TURN:
                    return 0
                try:
                    self._con = _connect_once(self.path, self.read_only)
                except StoreLockedError:
                    if time.monotonic() - self._kept_since > KEEP_WRITES:
                        ask(self._ask, create=True)  # readers have had the file long enough
                    return 0
            return self._flush(self._con)
        finally:
            self._lock.release()

    def _flush(self, con: duckdb.DuckDBPyConnection) -> int:
        """Run the writes kept for later, oldest first; a write that fails (or is interrupted) is rolled back
        and dropped, as if it had been run at once."""
        total = 0
        while self._pending:
            operation = self._pending.pop(0)
            with transaction(con):
                total += operation(con)
        return total

    def _check_open(self) -> None:
        if self._closed:  # a closed writer no longer holds the lock: it must not open the file again
            raise StoreClosedError(f"results store {self.path} is closed; open it again to use it")

    def close(self) -> None:
        if self._closed:
            return
        if self._pending:
            with self.use():  # the writes kept for later, waiting for readers if need be
                pass
        self._closed = True
        self._stop.set()
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
        """Let go of the connection, between two operations, after each new request of the other side."""
        handled = asked_at(self._asked)
        while not self._stop.wait(WATCH_INTERVAL):
            asked = asked_at(self._asked)
            if asked > handled and self._lock.acquire(blocking=False):
                try:
                    if self._depth == 0:
                        self._let_go()
                        self._let_go_at = time.monotonic()
                        handled = max(asked, time.time())  # requests made while it let go are served too
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


def connect(path: Path, read_only: bool, wait: float, ask_holder: Callable[[], None]) -> duckdb.DuckDBPyConnection:
    """Open ``path`` (writable: creating its folder if needed), asking whoever holds it (another process, or
    this one in the other mode) to let go and waiting up to ``wait`` seconds; a foreign file, a missing store
    or a lock held longer raise a ``StoreError``."""
    check_path(path, read_only)
    deadline = time.monotonic() + wait
    while True:
        try:
            return _connect_once(path, read_only)
        except StoreLockedError:
            if time.monotonic() > deadline:
                raise
            ask_holder()
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
    """Commit everything in the block, or nothing; a write the file system refuses is a ``StoreWriteError``."""
    try:
        con.begin()
        try:
            yield
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # a database stopped by a failed write has nothing to undo
                con.rollback()
            raise
        con.commit()
    except (duckdb.IOException, duckdb.TransactionException, duckdb.FatalException) as error:
        raise write_error(con, error) from error


def write_error(con: duckdb.DuckDBPyConnection, error: duckdb.Error) -> StoreError:
    """The error of a write to the store that failed (a full disk, a file size limit, a read-only folder)."""
    path = "the results store"
    with contextlib.suppress(duckdb.Error):  # a database stopped by the failed write answers nothing
        (file,) = con.execute("SELECT path FROM duckdb_databases() WHERE NOT internal").fetchone() or ("",)
        path = f"the results store {file}"
    problem = f"cannot write to {path} ({str(error).splitlines()[0]})"
    kept = "what was stored before is kept; run the same command again to resume"
    return with_cli_message(
        StoreWriteError(f"{problem}: free disk space or open another store; {kept}"),
        f"{problem}: free disk space or use another --store; {kept}",
    )
