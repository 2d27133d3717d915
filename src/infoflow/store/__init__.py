"""The results store: runs with manifests, keyed rows (resume, no duplicates), Parquet/CSV/JSONL export.

``ResultsStore`` is the interface (``store.base``); ``ResultsStore.open`` picks the backend (DuckDB).
"""

from infoflow.store.base import ResultsStore, default_store_path
from infoflow.store.errors import (
    NotAStoreError,
    SchemaVersionError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
    StoreWarning,
    UnknownRunError,
)
from infoflow.store.manifest import Manifest, Run, RunStatus
from infoflow.store.schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "Manifest",
    "NotAStoreError",
    "ResultsStore",
    "Run",
    "RunStatus",
    "SchemaVersionError",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "StoreWarning",
    "UnknownRunError",
    "default_store_path",
]
