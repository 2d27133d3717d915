"""Reading a GGUF file (llama.cpp's format) with transformers' own GGUF support.

transformers dequantizes every tensor to fp32 and renames it to its own naming; for Llama-family files it
also undoes the row permutation llama.cpp applies to the q/k projections. Our model is then built from
that state dict like from any transformers checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from gguf import GGUFReader
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

from infoflow.models.base import CausalLM
from infoflow.models.families import family_for
from infoflow.models.loading import instantiate


def read_gguf_config(path: Path) -> PretrainedConfig:
    """The transformers config stored in the GGUF metadata."""
    return AutoConfig.from_pretrained(path.parent, gguf_file=path.name)


def read_gguf_state_dict(path: Path, config: PretrainedConfig) -> dict[str, torch.Tensor]:
    """Every tensor of the file, dequantized to fp32, in transformers naming and layout."""
    with torch.device("meta"):  # transformers maps GGUF names through a (weightless) model of the config
        skeleton = AutoModelForCausalLM.from_config(config)
    return load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=skeleton)["tensors"]


def load_gguf(
    path: Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> tuple[CausalLM, PretrainedConfig]:
    """Our model from a ``.gguf`` file (an unsupported architecture fails before any tensor is read)."""
    config = read_gguf_config(path)
    family_for(config.model_type)
    return instantiate(config, read_gguf_state_dict(path, config), dtype=dtype, device=device), config


def load_gguf_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The tokenizer stored in the GGUF metadata, adding BOS where the file says so (Gemma: transformers'
    conversion drops ``tokenizer.ggml.add_bos_token``, and Gemma without its BOS is no language model)."""
    options = {"add_bos_token": True} if adds_bos(path) else {}
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, **options)


def adds_bos(path: Path) -> bool:
    """The file's ``tokenizer.ggml.add_bos_token`` (False where absent)."""
    field = GGUFReader(path).fields.get("tokenizer.ggml.add_bos_token")
    return field is not None and bool(field.parts[field.data[0]][0])
