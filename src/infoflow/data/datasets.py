"""One entry point for datasets: a registered name (``counterfact``, ``known_1000``, ...) or a file path."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from infoflow.data.counterfact import load_counterfact
from infoflow.data.errors import DatasetError
from infoflow.data.known_1000 import load_known_1000
from infoflow.data.prompts import FactPrompt
from infoflow.data.records import read_table, table_to_prompts
from infoflow.data.synthetic import load_synthetic


class DatasetLoader(Protocol):
    """Loads a named dataset from its public home, or from a local copy at ``path``."""

    def __call__(self, *, path: Path | None = None, split: str | None = None) -> list[FactPrompt]: ...


DATASETS: dict[str, DatasetLoader] = {
    "counterfact": load_counterfact,
    "known_1000": load_known_1000,
    "synthetic": load_synthetic,
}


def register_dataset(name: str, loader: DatasetLoader) -> None:
    """Make ``load_dataset(name)`` call ``loader``."""
    if name in DATASETS:
        raise ValueError(f"dataset {name!r} is already registered")
    DATASETS[name] = loader


def load_dataset(
    name_or_path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    split: str | None = None,
    path: str | Path | None = None,
) -> list[FactPrompt]:
    """Fact prompts of a named dataset or of a CSV/JSON/JSONL/Parquet file.

    Named datasets: ``path`` reads a local copy instead of downloading. Files: ``columns`` maps
    prompt/subject/target (and relation) to the file's column names; ``split`` keeps rows of that ``split``.
    """
    if isinstance(name_or_path, str) and name_or_path in DATASETS:
        if columns is not None:
            raise DatasetError(f"columns= applies to files, not to the named dataset {name_or_path!r}")
        return DATASETS[name_or_path](path=None if path is None else Path(path), split=split)
    if path is not None:
        raise DatasetError(f"path= applies to named datasets ({', '.join(DATASETS)}), not to {name_or_path!r}")
    file = Path(name_or_path)
    if not file.exists():
        raise FileNotFoundError(f"no dataset file {str(file)!r}, and no dataset of that name ({', '.join(DATASETS)})")
    return table_to_prompts(read_table(file), columns, split=split)
