"""Errors of the results store: each says what is wrong with which file and what to do."""

from __future__ import annotations


class StoreError(Exception):
    """A results store cannot be opened or used."""


class NotAStoreError(StoreError):
    """The file is not a DuckDB database, or a DuckDB database without the infoflow schema."""


class SchemaVersionError(StoreError):
    """The store was written with a schema version this infoflow does not read."""


class StoreLockedError(StoreError):
    """Another process (or this one, in another mode) holds the store."""


class StoreClosedError(StoreError):
    """The store was closed: a closed writer no longer holds the file and must not write it."""


class StoreWriteError(StoreError):
    """The file system refused a write to the store (a full disk, a read-only folder): the transaction is rolled
    back, what was committed before stays."""


class UnknownRunError(StoreError, LookupError):
    """No run (or more than one run) matches a run id."""


class StoreWarning(UserWarning):
    """Something about a run the user should know, that does not stop it (resuming across versions, ...)."""
