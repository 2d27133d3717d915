"""Turning a transformers config and state dict into one of our models, and reading local HF folders."""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import AutoConfig, PretrainedConfig

from infoflow.models.base import CausalLM
from infoflow.models.families import family_for

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


class ModelLoadError(RuntimeError):
    """A model could not be found, read or converted; the message says what to do."""


def instantiate(
    config: PretrainedConfig,
    state_dict: Mapping[str, torch.Tensor],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> CausalLM:
    """Build our model for ``config`` and fill it with a transformers-named ``state_dict``."""
    family = family_for(config.model_type)
    with torch.device("meta"):
        model = family.build(config)
    weights = family.convert(state_dict)
    if "lm_head.weight" not in weights and model.token_embedding_key in weights:
        if not getattr(config, "tie_word_embeddings", True):
            raise ModelLoadError("checkpoint has no lm_head.weight and its config does not tie it to the embeddings")
        weights["lm_head.weight"] = weights[model.token_embedding_key]  # tied embeddings are saved once
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise ModelLoadError(
            f"checkpoint does not match a {family.name} model of this config: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    check_shapes(model, weights)
    model.load_state_dict({k: weights[k] for k in expected}, assign=True, strict=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def check_shapes(model: CausalLM, weights: Mapping[str, torch.Tensor]) -> None:
    """A ``ModelLoadError`` naming the first mismatches where a weight's shape is not the one the config implies."""
    wrong = [
        f"{name}: {list(weights[name].shape)} in the weights, {list(param.shape)} by the config"
        for name, param in model.state_dict().items()
        if name in weights and weights[name].shape != param.shape
    ]
    if wrong:
        raise ModelLoadError(
            f"the weights do not match config.json: {len(wrong)} tensor(s) of another shape ({'; '.join(wrong[:2])}"
            f"{'; ...' if len(wrong) > 2 else ''}); use the config.json that came with these weights"
        )


def weight_files(folder: Path) -> list[Path]:
    """The files holding a transformers folder's weights: every shard of an index, or the single file."""
    for index_name in INDEX_FILES:
        index = folder / index_name
        if index.exists():
            return [folder / shard for shard in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    for name in WEIGHT_FILES:
        if (folder / name).exists():
            return [folder / name]
    raise ModelLoadError(f"no weights in {folder}: expected one of {', '.join(WEIGHT_FILES + INDEX_FILES)}")


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All weights of a transformers folder: single or sharded, safetensors or ``.bin``."""
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        state.update(read_weight_file(path))
    return state


def read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one weight file; a ``ModelLoadError`` where it is truncated or not a weight file."""
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ModelLoadError(
            f"cannot read the weights in {path} ({str(error).splitlines()[0]}): the file is truncated or damaged "
            f"(a partial download?); download or copy it again"
        ) from None


def load_hf_folder(
    folder: Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> tuple[CausalLM, PretrainedConfig]:
    """Our model from a folder written by transformers' ``save_pretrained`` (config.json + weights)."""
    config = AutoConfig.from_pretrained(folder)
    return instantiate(config, read_state_dict(folder), dtype=dtype, device=device), config
