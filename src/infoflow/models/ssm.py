"""Pieces shared by the state-space families: the causal depthwise conv and segment sums."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def causal_conv1d(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Depthwise causal convolution over time: x [B, T, C] -> [B, T, C].

    out[t, c] = bias[c] + sum_{k=0..K-1} w[c, k] * x[t - K + 1 + k, c], with x = 0 before the prompt.
    """
    seq_len = x.shape[1]
    return conv(x.transpose(1, 2))[..., :seq_len].transpose(1, 2)


def segsum(x: torch.Tensor) -> torch.Tensor:
    """Segment sums along the last axis: x [..., T] -> [..., T, T].

    out[..., t, s] = sum_{r=s+1..t} x[..., r] for s <= t, and -inf above the diagonal (so exp(out) is the
    lower-triangular decay matrix; exp of the diagonal is 1).
    """
    seq_len = x.shape[-1]
    x = x[..., None].expand(*x.shape, seq_len)  # x[..., r, s] = x[r]
    strictly_lower = torch.ones(seq_len, seq_len, dtype=torch.bool, device=x.device).tril(-1)
    sums = x.masked_fill(~strictly_lower, 0).cumsum(dim=-2)  # sums[t, s] = sum_{s < r <= t} x[r]
    lower = torch.ones(seq_len, seq_len, dtype=torch.bool, device=x.device).tril()
    return sums.masked_fill(~lower, float("-inf"))


def weightless_rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / sqrt(mean(x^2) + eps)`` over the last axis, in fp32 (Falcon-Mamba's B, C and Delta norms)."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).type_as(x)


def blocked_sources(blocked: torch.Tensor | None) -> torch.Tensor | None:
    """Bool [B, T]: positions that are the source of some blocked edge of each batch entry."""
    return None if blocked is None else blocked.any(dim=-2)


def remove_positions(x: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """x [B, T, ...] with the rows of ``positions`` (bool [B, T]) set to zero."""
    if positions is None:
        return x
    keep = (~positions).to(x.dtype)
    return x * keep.view(*keep.shape, *([1] * (x.dim() - 2)))


def silu_conv(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    return F.silu(causal_conv1d(x, conv))
