"""Llama attention whose queries and keys are RMS-normalised (QK-norm) before rotary: Qwen3, OLMo 2, Gemma 3.

    per head (Qwen3, Gemma 3; weights [P]):                  q[t, h] <- norm_q(q[t, h]),  k[t, g] <- norm_k(k[t, g])
    over the whole projection (OLMo 2; weights [H P], [Hkv P]): q[t] <- norm_q(q[t]),      k[t] <- norm_k(k[t])

The norms act on each position alone, so the hidden attention and its knockout are the shared attention's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig

from infoflow.models.llama import LlamaAttention
from infoflow.models.rotary import Rotary


class QKNormAttention(LlamaAttention):
    def __init__(
        self,
        config: PretrainedConfig,
        layer: int,
        rotary: Rotary,
        norm: Callable[[int, float], nn.Module],
        per_head: bool,
        **options: Any,
    ) -> None:
        super().__init__(config, layer, rotary, **options)
        q_width, k_width = self.head_dim, self.head_dim
        if not per_head:
            q_width, k_width = self.n_features * self.head_dim, self.n_kv_heads * self.head_dim
        self.q_norm, self.k_norm = norm(q_width, config.rms_norm_eps), norm(k_width, config.rms_norm_eps)
        self.per_head = per_head

    def norm_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.per_head:
            return self.q_norm(q), self.k_norm(k)
        # [B, T, H, P] -> [B, T, H P], normed, and back
        return self.q_norm(q.flatten(2)).view_as(q), self.k_norm(k.flatten(2)).view_as(k)
