"""The results store: runs with manifests, keyed rows (resume, no duplicates), Parquet/CSV export."""

from infoflow.store.errors import NotAStoreError, SchemaVersionError, StoreError, StoreLockedError, UnknownRunError
from infoflow.store.manifest import ExperimentKind, Manifest, Run, RunStatus
from infoflow.store.schema import SCHEMA_VERSION, TABLES
from infoflow.store.duckdb import ResultsStore, default_store_path

__all__ = [
    "SCHEMA_VERSION",
    "TABLES",
    "ExperimentKind",
    "Manifest",
    "NotAStoreError",
    "ResultsStore",
    "Run",
    "RunStatus",
    "SchemaVersionError",
    "StoreError",
    "StoreLockedError",
    "UnknownRunError",
    "default_store_path",
]
