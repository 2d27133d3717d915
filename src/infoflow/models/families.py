"""Which of our model families serves which transformers ``model_type``.

Each family is one module exposing ``build(config) -> CausalLM`` and
``convert_state_dict(transformers_state_dict) -> our_state_dict``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType

import torch
from transformers import PretrainedConfig

from infoflow.models.base import CausalLM

StateDict = Mapping[str, torch.Tensor]


def renamer(rules: Sequence[tuple[str, str]]) -> Callable[[StateDict], dict[str, torch.Tensor]]:
    """A state-dict converter applying regex ``(pattern, replacement)`` rules to every key."""

    def convert(state_dict: StateDict) -> dict[str, torch.Tensor]:
        renamed = {}
        for key, value in state_dict.items():
            for pattern, replacement in rules:
                key = re.sub(pattern, replacement, key)
            renamed[key] = value
        return renamed

    return convert


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    module_name: str

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(self.module_name)

    def build(self, config: PretrainedConfig) -> CausalLM:
        return self.module.build(config)

    def convert(self, state_dict: StateDict) -> dict[str, torch.Tensor]:
        """transformers' state dict (names and layouts) -> ours; tied lm_head weights may be absent."""
        return self.module.convert_state_dict(state_dict)


FAMILIES: tuple[Family, ...] = (
    Family("mamba1", ("mamba", "falcon_mamba"), "infoflow.models.mamba1"),
    Family("mamba2", ("mamba2",), "infoflow.models.mamba2"),
    Family("gpt2", ("gpt2",), "infoflow.models.gpt2"),
    Family("llama", ("llama", "qwen2", "mistral"), "infoflow.models.llama"),
    Family("gpt_neox", ("gpt_neox",), "infoflow.models.gpt_neox"),
    Family("gptj", ("gptj",), "infoflow.models.gptj"),
    Family("phi3", ("phi3",), "infoflow.models.phi3"),
    Family("qwen3", ("qwen3",), "infoflow.models.qwen3"),
    Family("olmo2", ("olmo2",), "infoflow.models.olmo2"),
    Family("gemma2", ("gemma2",), "infoflow.models.gemma"),
    Family("gemma3", ("gemma3_text",), "infoflow.models.gemma"),
    Family("bamba", ("bamba",), "infoflow.models.bamba"),
    Family("granitemoehybrid", ("granitemoehybrid",), "infoflow.models.granite_hybrid"),
    Family("nemotron_h", ("nemotron_h",), "infoflow.models.nemotron_h"),
    Family("jamba", ("jamba",), "infoflow.models.jamba"),
    Family("falcon_h1", ("falcon_h1",), "infoflow.models.falcon_h1"),
    Family("zamba2", ("zamba2",), "infoflow.models.zamba2"),
    Family("qwen3_next", ("qwen3_next",), "infoflow.models.qwen3_next"),
    Family("lfm2", ("lfm2",), "infoflow.models.lfm2"),
    Family("olmo_hybrid", ("olmo_hybrid",), "infoflow.models.olmo_hybrid"),
    Family("recurrent_gemma", ("recurrent_gemma",), "infoflow.models.recurrent_gemma"),
    Family("qwen3_5", ("qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text"), "infoflow.models.qwen3_5"),
    Family("rwkv", ("rwkv",), "infoflow.models.rwkv"),
    Family("xlstm", ("xlstm",), "infoflow.models.xlstm"),
)


def family_for(model_type: str) -> Family:
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise ValueError(
        f"unsupported architecture {model_type!r}; supported model types: {', '.join(supported_model_types())}"
    )


def supported_model_types() -> list[str]:
    return sorted(t for family in FAMILIES for t in family.model_types)
