"""Checkpoints in the original ``state-spaces`` (mamba_ssm) format: ``state-spaces/mamba2-*`` and ``mamba-*``.

Such a folder holds a mamba_ssm ``config.json`` (``d_model``, ``n_layer``, ``vocab_size``, ``ssm_cfg``, ...; no
``model_type``) and ``pytorch_model.bin`` with mamba_ssm's parameter names. We translate both to transformers'
``Mamba2Config`` / ``MambaConfig`` and names, then load through :func:`infoflow.models.loading.instantiate`.
The tokenizer is not in the folder: these models use GPT-NeoX's (:data:`STATE_SPACES_TOKENIZER`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from transformers import Mamba2Config, MambaConfig, PretrainedConfig

from infoflow.models.base import CausalLM
from infoflow.models.families import renamer
from infoflow.models.loading import ModelLoadError, instantiate, read_state_dict

STATE_SPACES_TOKENIZER = "EleutherAI/gpt-neox-20b"
NEOX_IDS = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}  # <|endoftext|>, <|padding|>

# mamba_ssm's defaults (MambaConfig in mamba_ssm/models/config_mamba.py, Mamba and Mamba2 module arguments)
MODEL_DEFAULTS: dict[str, Any] = {
    "d_intermediate": 0,
    "ssm_cfg": {},
    "attn_layer_idx": [],
    "rms_norm": True,
    "residual_in_fp32": True,
    "pad_vocab_size_multiple": 8,
    "tie_embeddings": True,
}
MAMBA1_DEFAULTS: dict[str, Any] = {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", "conv_bias": True}
MAMBA2_DEFAULTS: dict[str, Any] = {
    "d_state": 128,
    "d_conv": 4,
    "expand": 2,
    "headdim": 64,
    "ngroups": 1,
    "chunk_size": 256,
    "conv_bias": True,
    "dt_limit": (0.0, float("inf")),
    "d_ssm": None,
    "D_has_hdim": False,
    "rmsnorm": True,
    "norm_before_gate": False,
}
NORM_EPS = 1e-5  # mamba_ssm: block norms, final norm and Mamba-2's gated norm

# mamba_ssm's parameter names -> transformers' (the rest is identical)
to_transformers_names = renamer(((r"^backbone\.embedding\.", "backbone.embeddings."),))


def read_config(folder: Path) -> dict[str, Any] | None:
    """The mamba_ssm config of ``folder``, or None if it has no config.json in that format."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    is_mamba_ssm = isinstance(config, dict) and {"d_model", "n_layer", "ssm_cfg"} <= config.keys()
    return config if is_mamba_ssm and "model_type" not in config else None


def is_state_spaces_folder(folder: Path | str) -> bool:
    """True for a folder in the original mamba_ssm format (config.json with ``ssm_cfg``, no ``model_type``)."""
    return read_config(Path(folder)) is not None


def load_state_spaces_folder(
    folder: Path | str, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> tuple[CausalLM, PretrainedConfig]:
    """Our model and its transformers config (``Mamba2Config`` or ``MambaConfig``) from a mamba_ssm folder."""
    folder = Path(folder)
    raw = read_config(folder)
    if raw is None:
        raise ModelLoadError(f"{folder} is not a state-spaces (mamba_ssm) checkpoint: no config.json with ssm_cfg")
    config = transformers_config(raw)
    state_dict = to_transformers_names(read_state_dict(folder))
    return instantiate(config, state_dict, dtype=dtype, device=device), config


def transformers_config(raw: dict[str, Any]) -> PretrainedConfig:
    """mamba_ssm ``config.json`` -> transformers ``Mamba2Config`` (layer Mamba2) or ``MambaConfig`` (Mamba1)."""
    model = MODEL_DEFAULTS | raw
    unsupported = {
        "d_intermediate": model["d_intermediate"] != 0,  # an MLP after each mixer
        "attn_layer_idx": bool(model["attn_layer_idx"]),  # hybrid attention layers
        "rms_norm": not model["rms_norm"],  # LayerNorm blocks
    }
    check_supported(unsupported, model)
    ssm = dict(model["ssm_cfg"])
    layer = ssm.pop("layer", "Mamba1")
    multiple = model["pad_vocab_size_multiple"]
    common = {
        "hidden_size": model["d_model"],
        "num_hidden_layers": model["n_layer"],
        "vocab_size": math.ceil(model["vocab_size"] / multiple) * multiple,  # mamba_ssm pads the embedding
        "layer_norm_epsilon": NORM_EPS,
        "residual_in_fp32": model["residual_in_fp32"],
        "tie_word_embeddings": model["tie_embeddings"],
        **NEOX_IDS,
    }
    if layer == "Mamba1":
        return mamba1_config(MAMBA1_DEFAULTS | ssm, common)
    if layer == "Mamba2":
        return mamba2_config(MAMBA2_DEFAULTS | ssm, common)
    raise ModelLoadError(f"unsupported state-spaces layer {layer!r}; supported: Mamba1, Mamba2")


def mamba1_config(ssm: dict[str, Any], common: dict[str, Any]) -> MambaConfig:
    d_model = common["hidden_size"]
    return MambaConfig(
        state_size=ssm["d_state"],
        conv_kernel=ssm["d_conv"],
        expand=ssm["expand"],
        time_step_rank=math.ceil(d_model / 16) if ssm["dt_rank"] == "auto" else ssm["dt_rank"],
        use_conv_bias=ssm["conv_bias"],
        use_bias=ssm.get("bias", False),
        **common,
    )


def mamba2_config(ssm: dict[str, Any], common: dict[str, Any]) -> Mamba2Config:
    d_inner = ssm["expand"] * common["hidden_size"]
    unsupported = {
        "d_ssm": ssm["d_ssm"] not in (None, d_inner),  # part of the mixer as a gated MLP
        "D_has_hdim": ssm["D_has_hdim"],  # D per channel instead of per head
        "rmsnorm": not ssm["rmsnorm"],  # no gated norm
        "norm_before_gate": ssm["norm_before_gate"],  # norm(y) * silu(z) instead of norm(y * silu(z))
    }
    check_supported(unsupported, ssm)
    # norm_group_size is an extra config attribute that our build reads
    return Mamba2Config(  # type: ignore[call-arg]
        num_heads=d_inner // ssm["headdim"],
        head_dim=ssm["headdim"],
        state_size=ssm["d_state"],
        n_groups=ssm["ngroups"],
        conv_kernel=ssm["d_conv"],
        expand=ssm["expand"],
        chunk_size=ssm["chunk_size"],
        use_conv_bias=ssm["conv_bias"],
        use_bias=ssm.get("bias", False),
        time_step_limit=tuple(ssm["dt_limit"]),
        norm_group_size=d_inner // ssm["ngroups"],  # mamba_ssm normalises per group (transformers: all of Di)
        **common,
    )


def check_supported(unsupported: dict[str, bool], values: dict[str, Any]) -> None:
    bad = [f"{key}={values[key]!r}" for key, is_bad in unsupported.items() if is_bad]
    if bad:
        raise ModelLoadError(f"unsupported state-spaces checkpoint option(s): {', '.join(bad)}")
