"""Pieces shared by the state-space families: the causal depthwise conv and segment sums."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from infoflow.models.tails import TailRows


def causal_conv1d(x: torch.Tensor, conv: nn.Conv1d, with_bias: bool = True, in_fp32: bool = False) -> torch.Tensor:
    """Depthwise causal convolution over time: x [B, T, C] -> [B, T, C] (x's dtype, or fp32 with ``in_fp32``).

    out[t, c] = bias[c] + sum_{k=0..K-1} w[c, k] * x[t - K + 1 + k, c], with x = 0 before the prompt; as K
    shifted multiply-adds (K is 2 to 4), which on a GPU beat the depthwise conv kernel at these lengths.
    """
    kernel, seq_len = conv.kernel_size[0], x.shape[1]
    padded = F.pad(x, (0, 0, kernel - 1, 0))  # [B, K - 1 + T, C]
    weight = conv.weight[:, 0].float()  # [C, K]
    out = padded[:, :seq_len].float() * weight[:, 0]  # fp32 sums
    for k in range(1, kernel):
        out = out + padded[:, k : k + seq_len].float() * weight[:, k]
    if with_bias and conv.bias is not None:
        out = out + conv.bias.float()
    return out if in_fp32 else out.to(x.dtype)


def segsum(x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Segment sums along the last axis: x [..., T] -> [..., R, T] for output positions ``rows`` [R]
    (default: all T).

    out[..., i, s] = sum_{r=s+1..t} x[..., r] with t = rows[i], for s <= t, and -inf for s > t (so exp(out)
    is the causal decay matrix; exp of the diagonal is 1). Sums run backwards from t, without subtraction.
    """
    seq_len = x.shape[-1]
    rows = torch.arange(seq_len, device=x.device) if rows is None else rows
    upto = torch.arange(seq_len, device=x.device)[None, :] <= rows[:, None]  # [R, T]: r <= t
    masked = x[..., None, :].masked_fill(~upto, 0)  # [..., R, T]: x[r] for r <= t
    from_r = masked.flip(-1).cumsum(-1).flip(-1)  # from_r[i, s] = sum_{s <= r <= t} x[r]
    after_s = torch.cat([from_r[..., 1:], torch.zeros_like(from_r[..., :1])], dim=-1)  # sum_{s < r <= t}
    return after_s.masked_fill(~upto, float("-inf"))


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


def tail_silu_conv(
    prefix_raw: torch.Tensor, tail_raw: torch.Tensor, start: int, conv: nn.Conv1d, rows: TailRows
) -> torch.Tensor:
    """silu(conv) at the positions start..T-1 of tail rows (see :func:`tail_conv`)."""
    return F.silu(tail_conv(prefix_raw, tail_raw, start, conv, rows))


def tail_conv(
    prefix_raw: torch.Tensor, tail_raw: torch.Tensor, start: int, conv: nn.Conv1d, rows: TailRows
) -> torch.Tensor:
    """The causal conv at the positions start..T-1 of tail rows [A, R, C], whose inputs before ``start`` are
    their prompts' clean ones (prefix_raw [P, T, C]).

    The conv is linear: its output is the tail's own part (a conv of the tail alone) plus the part of the
    clean positions before ``start``, which is the same for every row of a prompt and reaches only the first
    K - 1 tail positions; that part is computed per prompt and gathered, not per row.
    """
    own = causal_conv1d(tail_raw, conv, in_fp32=True)  # [A, R, C]: x = 0 before start
    lookback, reach = min(start, conv.kernel_size[0] - 1), min(conv.kernel_size[0] - 1, tail_raw.shape[1])
    if lookback > 0:
        head = prefix_raw[:, start - lookback : start]  # [P, lookback, C]
        head_only = torch.cat([head, head.new_zeros(head.shape[0], reach, head.shape[2])], dim=1)
        clean_part = causal_conv1d(head_only, conv, with_bias=False, in_fp32=True)[:, lookback:]  # [P, reach, C]
        own = torch.cat([own[:, :reach] + rows.gather(clean_part), own[:, reach:]], dim=1)
    return own.to(tail_raw.dtype)  # both parts summed in fp32 and rounded once, as the clean conv
