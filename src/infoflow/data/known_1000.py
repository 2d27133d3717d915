"""ROME's known_1000 facts (1,209 prompts, MIT), downloaded once into a cache or read from a local file."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

from infoflow.data.errors import DatasetError, DatasetUnavailableError
from infoflow.data.prompts import FactPrompt, as_continuation
from infoflow.data.records import read_table, table_to_prompts
from infoflow.errors import with_cli_message

URL = "https://rome.baulab.info/data/dsets/known_1000.json"
FILE_NAME = "known_1000.json"
COLUMNS = {"prompt": "prompt", "subject": "subject", "target": "attribute", "relation": "template"}
DOWNLOAD_TIMEOUT_S = 30


def cache_dir() -> Path:
    """Where downloaded datasets are kept: ``$INFOFLOW_CACHE`` or ``~/.cache/infoflow``."""
    return Path(os.environ.get("INFOFLOW_CACHE", Path.home() / ".cache" / "infoflow"))


def load_known_1000(*, path: Path | None = None, split: str | None = None) -> list[FactPrompt]:
    """known_1000 from ``path`` or its public URL; ``prompt_id`` = row index (= ``known_id``).

    The file's ``attribute`` has no leading space; ``target`` is ``as_continuation(prompt, attribute)`` and
    ``extras["attribute"]`` keeps the bare value.
    """
    if split is not None:
        raise DatasetError(f"known_1000 has no splits, got split={split!r}")
    prompts = table_to_prompts(read_table(path if path is not None else _download()), COLUMNS)
    return [
        replace(p, target=as_continuation(p.prompt, p.target), extras={**p.extras, "attribute": p.target})
        for p in prompts
    ]


def _download() -> Path:
    target = cache_dir() / FILE_NAME
    if target.is_file():
        return target
    try:
        with urllib.request.urlopen(URL, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as e:
        unavailable = f"could not download known_1000 from {URL} ({e}). Without network, fetch that file elsewhere and"
        raise with_cli_message(
            DatasetUnavailableError(
                f"{unavailable} pass it: load_dataset('known_1000', path='known_1000.json'), or put it at {target}"
            ),
            f"{unavailable} pass it with --dataset-file known_1000.json, or put it at {target}",
        ) from e
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)
    return target
