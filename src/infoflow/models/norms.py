"""RMSNorm that applies its weight in fp32 before casting back: OLMo 2's, and Gemma's ``(1 + w)`` form.

    y = ((offset + w) * x / sqrt(mean(x^2) + eps)).to(dtype of x)          (offset 0: OLMo 2; 1: Gemma)

Llama's :class:`~infoflow.models.base.RMSNorm` casts before the weight; in half precision the two differ.
"""

from __future__ import annotations

import torch

from infoflow.models.base import RMSNorm


class Fp32RMSNorm(RMSNorm):
    def __init__(self, dim: int, eps: float, offset: float = 0.0) -> None:
        super().__init__(dim, eps)
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (self.offset + self.weight.float())).to(x.dtype)


def gemma_rms_norm(dim: int, eps: float) -> Fp32RMSNorm:
    """Gemma's norm: ``(1 + w)`` times the normalised input (its weights are stored around 0)."""
    return Fp32RMSNorm(dim, eps, offset=1.0)
