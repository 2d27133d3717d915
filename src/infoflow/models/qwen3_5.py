"""Qwen3.5 (text model; dense ``qwen3_5`` and MoE ``qwen3_5_moe``): Qwen3-Next's layers with separate input
projections of the Gated DeltaNet layers.

Every piece is Qwen3-Next's (see :mod:`infoflow.models.qwen3_next`): the gated delta rule and its exact hidden
attention, gated attention with partial rotary (the multimodal rotary of Qwen3.5 is plain rotary for text,
where the three position axes are equal), offset RMSNorms, and sparse MoE MLPs with a shared expert in
``qwen3_5_moe``. Multimodal checkpoints (``Qwen3_5ForConditionalGeneration``) load their language model; the
vision tower and the multi-token-prediction head are dropped.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig

from infoflow.models import qwen3_next
from infoflow.models.base import CausalLM
from infoflow.models.families import StateDict
from infoflow.models.qwen3_next import GatedDeltaNet


class SplitGatedDeltaNet(GatedDeltaNet):
    """Qwen3.5's projections: qkv (q, k, v of all heads, in that order), z, b and a each from their own."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config)
        heads, d_model = self.n_features, config.hidden_size
        self.in_proj_qkv = nn.Linear(d_model, self.conv_dim, bias=False)
        self.in_proj_z = nn.Linear(d_model, heads * self.value_dim, bias=False)
        self.in_proj_b = nn.Linear(d_model, heads, bias=False)
        self.in_proj_a = nn.Linear(d_model, heads, bias=False)

    def projections(self, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = self.in_proj_z(hidden).unflatten(-1, (self.n_features, self.value_dim))
        return self.in_proj_qkv(hidden), z, self.in_proj_b(hidden), self.in_proj_a(hidden)


def build(config: PretrainedConfig) -> CausalLM:
    """A Qwen3.5 language model from a transformers Qwen3.5 config (multimodal or text)."""
    return qwen3_next.build_hybrid(config.get_text_config(), "qwen3_5", SplitGatedDeltaNet)


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours: a multimodal checkpoint's ``model.language_model.`` is the text model's
    ``model.``; the vision tower (``model.visual.``) and ``mtp.`` are not part of the LM."""
    text = {
        key.replace("model.language_model.", "model.", 1): value
        for key, value in state_dict.items()
        if not key.startswith(("model.visual.", "mtp."))
    }
    return qwen3_next.convert_state_dict(text)
