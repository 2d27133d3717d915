"""What a run is: its manifest (what was computed, on what, with which code) and its identity."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    PARTIAL = "partial"  # stopped before the end (interrupted, killed); resumable
    FAILED = "failed"


# The fields that identify a run: the same values give the same run_id, so a re-run resumes into it. ``params``
# hold everything else that changes a number: the experiment's parameters, the engine, dtype and device type.
IDENTITY_FIELDS = ("kind", "model_id", "model_revision", "dataset", "dataset_filter", "params")
# Parameters that runs made by infoflow before store schema 2 did not record (so their identity lacks them).
RECORDED_SINCE_SCHEMA_2 = ("dtype", "device")


def package_version() -> str:
    """The installed infoflow's version; a source tree run without installing it (PYTHONPATH=src) has none."""
    try:
        return importlib.metadata.version("infoflow")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (run from a source tree, not installed)"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"parameter value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace; enums, paths, sets and numpy scalars converted."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable)


@dataclass(frozen=True)
class Manifest:
    """What a run computes. ``params`` is normalised to plain JSON (tuples become lists) on creation.

    ``model_revision`` is the hub commit or a hash of the weight file; ``dataset_filter`` describes the
    prompt selection in words or as a preset name. ``n_prompts`` (expected prompt count, for progress) and
    ``package_version`` are recorded but are not part of the identity.
    """

    kind: str  # the experiment (``experiments.registry``); its rows go to the row table of the same name
    model_id: str
    model_revision: str
    dataset: str
    dataset_filter: str = "all"
    params: Mapping[str, Any] = field(default_factory=dict)
    n_prompts: int | None = None
    package_version: str = field(default_factory=package_version)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", str(self.kind))
        object.__setattr__(self, "params", json.loads(canonical_json(dict(self.params))))

    @property
    def run_id(self) -> str:
        """16 hex digits of the SHA-256 of the identity fields."""
        return _run_id({name: getattr(self, name) for name in IDENTITY_FIELDS})

    @property
    def schema_1_run_id(self) -> str:
        """The id infoflow gave this run before store schema 2, when dtype and device were not recorded."""
        identity = {name: getattr(self, name) for name in IDENTITY_FIELDS}
        identity["params"] = {k: v for k, v in self.params.items() if k not in RECORDED_SINCE_SCHEMA_2}
        return _run_id(identity)


def _run_id(identity: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Run:
    """A run as stored: its manifest, status, timestamps (UTC), and its name (given, or derived from its
    manifest) and tags, which label it but are not part of its identity."""

    run_id: str
    manifest: Manifest
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    message: str | None = None
    name: str = ""
    tags: tuple[str, ...] = ()
