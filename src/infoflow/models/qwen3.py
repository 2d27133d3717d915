"""Qwen3: Llama (see :mod:`infoflow.models.llama`) with QK-norm, an RMSNorm on every query and key head before
rotary:

    q[t, h] <- w_q * q[t, h] / rms(q[t, h]),   k[t, g] <- w_k * k[t, g] / rms(k[t, g])      (weights [P])

Layers that ``layer_types`` marks ``sliding_attention`` attend to the last ``sliding_window`` positions only.
"""

from __future__ import annotations

from functools import partial

from transformers import PretrainedConfig

from infoflow.models import llama
from infoflow.models.base import CausalLM, RMSNorm
from infoflow.models.qk_norm import QKNormAttention

convert_state_dict = llama.convert_state_dict  # q_norm / k_norm sit under self_attn, renamed with it


def build(config: PretrainedConfig) -> CausalLM:
    """A Qwen3 (dense) model from a transformers config."""
    return llama.build(config, "qwen3", partial(QKNormAttention, norm=RMSNorm, per_head=True))
