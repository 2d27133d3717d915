"""Hidden-attention page logic: per layer, the mixing matrix [target, source] of a prompt — the mean over
features and each feature's own (Mamba-1 channels, Mamba-2 heads, attention heads).

Matrices come from the experiments' ``attention`` function, run into a scratch results store (or read from
an attention run of the app's store).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from infoflow.app.explorer import ExplorerRequest, prompt_spans
from infoflow.experiments.attention import attention
from infoflow.experiments.request import EngineName, RunRequest, open_run
from infoflow.models.load import LoadedModel
from infoflow.store import ResultsStore

FEATURE_NAMES = {"mamba1": "channel", "falcon_mamba": "channel", "mamba2": "head", "gpt2": "head", "llama": "head"}


def feature_name(loaded: LoadedModel) -> str:
    """What one feature of the model's mixer is: a channel (Mamba-1) or a head (Mamba-2, attention)."""
    return FEATURE_NAMES.get(loaded.model.family, "feature")


def compute(
    loaded: LoadedModel,
    prompt: str,
    subject: str = "",
    per_feature: bool = True,
    layers: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Attention rows (layer, feature, matrix, tokens) of one typed prompt: ``layers`` (default: all), the
    mean over features and, with ``per_feature``, each feature's own matrix."""
    fact, _, _, _ = prompt_spans(loaded, ExplorerRequest(prompt=prompt, subject=subject, target=" x"))
    with tempfile.TemporaryDirectory() as folder:
        request = RunRequest(
            model=loaded.name,
            dataset="typed prompt",
            store=Path(folder) / "scratch.duckdb",
            engine=EngineName.REFERENCE,
            show_progress=False,
        )
        with open_run(request, loaded=loaded, prompts=[fact]) as run:
            run_id = attention(run.context, run.prompts, layers, per_feature)
            errors = run.context.store.frame(run_id, "errors")
            if not errors.empty:
                raise ValueError(f"bad prompt: {errors['reason'].iloc[0]}")
            return run.context.store.frame(run_id, "attention")


def stored(store: ResultsStore, run_id: str) -> pd.DataFrame:
    """Attention rows of a stored attention run."""
    return store.frame(run_id, "attention")


def layers(rows: pd.DataFrame) -> list[int]:
    return sorted(int(layer) for layer in rows["layer"].unique())


def features(rows: pd.DataFrame, prompt_id: int | None = None) -> list[str]:
    """'mean' first, then the features in numeric order."""
    if prompt_id is not None:
        rows = rows[rows["prompt_id"] == prompt_id]
    names = [str(f) for f in rows["feature"].unique()]
    order = sorted((f for f in names if f != "mean"), key=lambda f: (1, int(f), "") if f.isdigit() else (0, 0, f))
    return ["mean", *order]


def with_category_means(rows: pd.DataFrame, categories: Mapping[int, str]) -> pd.DataFrame:
    """Per-feature rows plus, per prompt and layer, the mean matrix over the features of each category
    (``categories``: feature index -> name, e.g. the decay split of ``features.decay_table``)."""
    each = rows[rows["feature"].astype(str).str.isdigit()]
    extra = []
    for (prompt_id, layer), group in each.groupby(["prompt_id", "layer"]):
        names = group["feature"].astype(int).map(categories)
        for name in sorted(names.dropna().unique()):
            stack = np.stack([np.array([list(r) for r in m], dtype=float) for m in group["matrix"][names == name]])
            extra.append({"prompt_id": prompt_id, "layer": layer, "feature": name,
                          "matrix": stack.mean(0).tolist(), "tokens": group["tokens"].iloc[0]})  # fmt: skip
    return pd.concat([rows, pd.DataFrame(extra)], ignore_index=True) if extra else rows


def matrix(rows: pd.DataFrame, layer: int, feature: str = "mean", prompt_id: int | None = None) -> tuple:
    """(matrix [T, T] as numpy, tokens) of one layer and feature."""
    part = rows[(rows["layer"] == layer) & (rows["feature"].astype(str) == str(feature))]
    if prompt_id is not None:
        part = part[part["prompt_id"] == prompt_id]
    if part.empty:
        raise ValueError(f"no matrix for layer {layer}, feature {feature}")
    row = part.iloc[0]
    return np.array([list(r) for r in row["matrix"]], dtype=float), [str(t) for t in row["tokens"]]
