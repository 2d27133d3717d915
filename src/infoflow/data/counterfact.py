"""CounterFact (``NeelNanda/counterfact-tracing``) and the reference code's prompt ids.

Our ids are raw row indices of the hub's ``train`` split (21,919 rows). The reference code
(nirendy/mamba-knockout, ``splitting.py``) numbers prompts differently; see ``reference_order``.
"""

from __future__ import annotations

import random
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np

from infoflow.data.errors import DatasetError, DatasetUnavailableError
from infoflow.data.prompts import FactPrompt
from infoflow.data.records import Table, read_table, table_to_prompts
from infoflow.errors import with_cli_message
from infoflow.extras import install_command

HUB_ID = "NeelNanda/counterfact-tracing"
SIZE = 21_919
COLUMNS = {"prompt": "prompt", "subject": "subject", "target": "target_true", "relation": "relation"}
REFERENCE_SEED = 42
REFERENCE_SPLITS = ("train1", "train2", "train3", "train4", "train5", "test")
REFERENCE_SPLIT_FRACTION = 0.1


def load_counterfact(*, path: Path | None = None, split: str | None = None) -> list[FactPrompt]:
    """CounterFact from a local file (``path``) or the hub; ``prompt_id`` = raw row index.

    ``split``: ``None``/``"train"`` for every row in raw order, or a reference split (``train1`` ..
    ``train5``, ``test``) for its rows in the reference order (ids stay raw row indices).
    """
    table = read_table(path) if path is not None else _hub_table()
    prompts = table_to_prompts(table, COLUMNS)
    if split in (None, "train"):
        return prompts
    if split not in REFERENCE_SPLITS:
        raise DatasetError(f"unknown CounterFact split {split!r}; use 'train' or one of {list(REFERENCE_SPLITS)}")
    n = len(prompts)
    order = reference_order(n)
    return [prompts[reference_counterfact_index(i, n)] for k, i in enumerate(order) if _reference_split(k, n) == split]


def _hub_table() -> Table:
    try:
        import datasets
    except ImportError as e:
        needs = f"loading {HUB_ID} from the hub needs the 'datasets' package ({install_command('hub-data')}), or pass"
        raise with_cli_message(
            DatasetUnavailableError(f"{needs} a local file: load_dataset('counterfact', path='counterfact.parquet')"),
            f"{needs} a local file with --dataset-file counterfact.parquet",
        ) from e
    try:
        dataset = datasets.load_dataset(HUB_ID, split="train")
    except Exception as e:  # the hub client raises many kinds (ConnectionError, OSError, HfHubHTTPError, ...)
        unavailable = (
            f"could not load {HUB_ID} from the Hugging Face hub ({type(e).__name__}: {e}). Without network, "
            "get the train split as a Parquet/JSON file elsewhere and pass it"
        )
        raise with_cli_message(
            DatasetUnavailableError(f"{unavailable}: load_dataset('counterfact', path='counterfact.parquet')"),
            f"{unavailable} with --dataset-file counterfact.parquet",
        ) from e
    return Table(list(dataset.column_names), dataset.to_list(), HUB_ID)


@cache
def _hf_permutation(n: int) -> tuple[int, ...]:
    return tuple(int(i) for i in np.random.default_rng(REFERENCE_SEED).permutation(n))


@cache
def reference_order(n: int = SIZE) -> tuple[int, ...]:
    """The reference's ``original_idx`` of each row of its split dataset, in its order (train1 .. train5, test).

    The reference shuffles with HF ``dataset.shuffle(seed=42)`` (permutation ``np.random.default_rng(42)
    .permutation(n)``), then ``random.seed(42); random.shuffle(indices)`` over ``range(n)`` and selects
    ``indices``, recording ``original_idx = indices[k]`` for row k: an index into the HF-shuffled data.
    """
    indices = list(range(n))
    random.Random(REFERENCE_SEED).shuffle(indices)
    return tuple(indices)


def reference_counterfact_index(original_idx: int, n: int = SIZE) -> int:
    """Raw row of the reference code's ``original_idx`` (``np.random.default_rng(42).permutation(n)[i]``)."""
    if not 0 <= original_idx < n:
        raise IndexError(f"original_idx {original_idx} out of range for {n} rows")
    return _hf_permutation(n)[original_idx]


def _reference_split(position: int, n: int) -> str:
    """The split of row ``position`` of the reference's split dataset: 10 % per train split, the rest test."""
    size = int(REFERENCE_SPLIT_FRACTION * n)
    return REFERENCE_SPLITS[min(position // size, len(REFERENCE_SPLITS) - 1)]


def with_reference_ids(prompts: list[FactPrompt]) -> list[FactPrompt]:
    """Renumber all of CounterFact (raw ids 0..n-1) to the reference's ``original_idx``, in the reference order.

    Each prompt keeps its raw row in ``extras["raw_row"]`` and gets ``extras["reference_split"]``.
    """
    n = len(prompts)
    if n != SIZE or [p.prompt_id for p in prompts] != list(range(n)):
        raise DatasetError(f"with_reference_ids needs all {SIZE} CounterFact prompts with raw row ids, in order")
    renumbered = []
    for k, original_idx in enumerate(reference_order(n)):
        raw = prompts[reference_counterfact_index(original_idx, n)]
        extras = {**raw.extras, "raw_row": raw.prompt_id, "reference_split": _reference_split(k, n)}
        renumbered.append(replace(raw, prompt_id=original_idx, extras=extras))
    return renumbered
