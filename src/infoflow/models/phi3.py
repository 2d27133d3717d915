"""Phi-3 (and Phi-4-mini, which shares its ``model_type``): a Llama whose checkpoints fuse the projections.

``qkv_proj`` stacks the rows of q (H P), k (Hkv P) and v (Hkv P); ``gate_up_proj`` those of gate and up
(``mlp = down(act(gate(y)) * up(y))``). A linear map of stacked rows is the stack of the linear maps, so the
fused weights are split on loading and the forward pass is Llama's (``infoflow.models.llama``): RMSNorm,
grouped-query attention on RoPE-rotated queries and keys (only the first R = P * ``partial_rotary_factor``
dims where that is below 1), every layer within the last ``sliding_window`` positions where the config sets
one, a knockout setting the logit of each blocked edge to -inf. ``longrope`` (the 128k-context checkpoints)
changes its frequencies with the prompt length and is refused.
"""

from __future__ import annotations

import torch
from transformers import PretrainedConfig

from infoflow.models import llama
from infoflow.models.base import CausalLM
from infoflow.models.families import StateDict


def build(config: PretrainedConfig) -> CausalLM:
    """A Phi-3 model (``model_type`` phi3) from a transformers config."""
    model = llama.build(config)
    model.family = "phi3"
    return model


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours: ``qkv_proj`` split into ``q_proj``, ``k_proj``, ``v_proj`` (the q rows are as
    many as ``o_proj`` has inputs, k and v share the rest) and ``gate_up_proj`` into halves ``gate_proj``,
    ``up_proj``; then Llama's names."""
    split: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if ".qkv_proj." in key:
            n_q = state_dict[key.split(".qkv_proj.")[0] + ".o_proj.weight"].shape[1]  # o_proj: [D, H P]
            n_kv = (value.shape[0] - n_q) // 2
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.split([n_q, n_kv, n_kv]), strict=True):
                split[key.replace("qkv_proj", name)] = part
        elif ".gate_up_proj." in key:
            for name, part in zip(("gate_proj", "up_proj"), value.chunk(2), strict=True):
                split[key.replace("gate_up_proj", name)] = part
        else:
            split[key] = value
    return llama.convert_state_dict(split)
