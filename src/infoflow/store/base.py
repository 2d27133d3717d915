"""The results store's interface: runs with manifests, keyed rows (resume, no duplicates), export.

``ResultsStore.open(path)`` picks the backend by the path's suffix and imports its module only then (einops'
backends pattern): a ``.duckdb`` file (and any other suffix) is the DuckDB backend. A new backend subclasses
``ResultsStore`` and registers its suffix in ``BACKENDS``; export formats are the writers of ``store.export``.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from infoflow.store.export import WRITERS, Export
from infoflow.store.manifest import Manifest, Run, RunStatus, canonical_json

if TYPE_CHECKING:
    import pandas as pd
    import polars
    import pyarrow as pa

    from infoflow.store.rows import Rows

DEFAULT_STORE = "infoflow-results.duckdb"
# Store file suffix -> "module:class" of its backend, imported when a store of that suffix is opened.
BACKENDS: dict[str, str] = {".duckdb": "infoflow.store.duckdb:DuckDBStore"}
DEFAULT_BACKEND = ".duckdb"  # for any other suffix


def default_store_path() -> Path:
    """``$INFOFLOW_STORE`` if set, else ``./infoflow-results.duckdb``."""
    return Path(os.environ.get("INFOFLOW_STORE") or DEFAULT_STORE)


def backend_for(path: Path) -> type[ResultsStore]:
    module, _, name = BACKENDS.get(path.suffix.lower(), BACKENDS[DEFAULT_BACKEND]).partition(":")
    return getattr(importlib.import_module(module), name)


class ResultsStore(ABC):
    """Runs and their rows. Open with ``ResultsStore.open``; use as a context manager; one thread at a time.

    Runs are addressed by id, unique id prefix (at least 4 characters) or name. Rows go to the row table named
    after the run's kind (the experiment's, ``store.schema.row_tables``); inserting an existing key is a no-op.
    """

    path: Path
    read_only: bool

    @classmethod
    def open(cls, path: str | Path | None = None, *, read_only: bool = False) -> ResultsStore:
        """Open (creating it if needed and writable) the store at ``path`` (default: ``default_store_path()``)."""
        path = Path(path) if path is not None else default_store_path()
        backend = backend_for(path) if cls is ResultsStore else cls
        return backend.open_path(path, read_only)

    @classmethod
    @abstractmethod
    def open_path(cls, path: Path, read_only: bool) -> ResultsStore:
        """This backend's store at ``path``."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # --- runs ---

    @abstractmethod
    def start_run(self, manifest: Manifest, *, name: str | None = None, tags: Iterable[str] = ()) -> Run:
        """Create the run of ``manifest``, or find it (same identity => same run_id) to resume; mark it running.

        ``name`` (default: derived from the manifest) and ``tags`` label it; resuming with a name renames it and
        adds the tags."""

    @abstractmethod
    def finish_run(self, run_id: str, status: RunStatus | str = RunStatus.COMPLETE, message: str | None = None) -> Run:
        """Record how a run ended: complete, partial (stopped early) or failed (with ``message``)."""

    @abstractmethod
    def run(self, run_id: str) -> Run:
        """The run with this id, unique id prefix or name."""

    @abstractmethod
    def runs(self) -> pd.DataFrame:
        """All runs, oldest first: ``run_id``, ``name``, ``tags``, manifest fields, progress (``n_done``,
        ``n_errors``, ``n_rows``), ``status``, ``message``, ``package_version``, ``created_at``, ``updated_at``."""

    @abstractmethod
    def label_run(
        self, run_id: str, *, name: str | None = None, tags: Iterable[str] = (), untag: Iterable[str] = ()
    ) -> Run:
        """Rename a run and add or remove tags."""

    @abstractmethod
    def delete_run(self, run_id: str) -> None:
        """Delete a run and all its rows."""

    # --- rows ---

    @abstractmethod
    def add_rows(self, run_id: str, rows: Rows, *, done: Iterable[int] | None = None) -> int:
        """Add rows to the run's table; return how many were new. ``done`` lists the prompts whose rows are now
        all written (default: every prompt in ``rows``); rows and completion marks are committed together.

        While a reader holds the store, the rows are kept and written by the store's next operation (at the
        latest when it closes), and this returns 0: a run does not wait for readers."""

    @abstractmethod
    def add_errors(self, run_id: str, errors: Mapping[int, str]) -> int:
        """Record per-prompt errors ``{prompt_id: reason}``; return how many were new (0 if kept, as ``add_rows``)."""

    @abstractmethod
    def mark_in_flight(self, run_id: str, prompt_ids: Iterable[int], context: str) -> None:
        """Mark prompts as being computed, with ``context`` (JSON text); ``add_rows`` and ``add_errors`` remove
        the marks of the prompts they write, in their transaction."""

    @abstractmethod
    def in_flight(self, run_id: str) -> dict[int, str]:
        """The run's prompts marked in flight, with their context: at the start of a run, those a process was
        computing when it ended (a store has one writer)."""

    @abstractmethod
    def clear_in_flight(self, run_id: str) -> None:
        """Remove the run's in-flight marks."""

    @abstractmethod
    def completed_prompts(self, run_id: str, *, include_errors: bool = True) -> set[int]:
        """Prompts an experiment resuming this run skips: completed ones and (by default) failed ones."""

    @abstractmethod
    def done_keys(self, run_id: str, table: str | None = None) -> set[tuple[Any, ...]]:
        """Keys (without ``run_id``) of the rows written, for resuming within a prompt."""

    @abstractmethod
    def arrow(self, run_id: str, table: str | None = None) -> pa.Table:
        """Rows of a run in ``table`` (default: the table of its kind; or ``errors``), ordered by key."""

    @abstractmethod
    def frame(self, run_id: str, table: str | None = None, *, polars: bool = False) -> pd.DataFrame | polars.DataFrame:
        """``arrow`` as a pandas (or polars) frame."""

    def export(self, run_id: str, path: str | Path, *, table: str | None = None, fmt: str | None = None) -> Path:
        """Write a run's rows (as ``frame``) with the writer of ``fmt`` (default: the suffix of ``path``):
        parquet (the run in the file's metadata), csv or jsonl."""
        path = Path(path)
        fmt = (fmt or path.suffix.lstrip(".")).lower()
        if fmt not in WRITERS:
            raise ValueError(f"export format must be one of {', '.join(WRITERS)}, not {fmt!r}")
        run = self.run(run_id)
        export = Export(self.arrow(run.run_id, table), canonical_json(asdict(run)), self.json_columns(run, table))
        path.parent.mkdir(parents=True, exist_ok=True)
        WRITERS[fmt](export, path)
        return path

    @staticmethod
    def json_columns(run: Run, table: str | None) -> tuple[str, ...]:
        from infoflow.store.schema import row_tables

        return tuple(c.name for c in row_tables()[table or run.manifest.kind].columns if c.is_json)
