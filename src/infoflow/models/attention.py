"""The causal self-attention mixer every transformer family shares.

Per query head h (a feature), with queries q, keys k, values v [T, P] and scale c (1/sqrt(P) by default):

    logits[h, t, s] = c q[h, t] . k[h, s]            for allowed s: s <= t (and t - s < window, if any)
                    (Gemma 2 soft-caps it: cap tanh(logits / cap))
    A[h, t, s]      = softmax_s(logits[h, t, :])
    y[t, h]         = sum_s A[h, t, s] v[s, h]

A knockout sets the logit of each blocked edge to -inf before the softmax (in every head; after the soft-cap,
where there is one), so the row renormalises over the edges that stay; a row with no edge left receives
nothing (y[t, h] = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from infoflow.models.base import MixingTerms, TokenMixer
from infoflow.models.modes import KnockoutMode, MixerKind


@dataclass
class AttentionInputs:
    q: torch.Tensor  # [B, T, H, P] queries (rotated, for RoPE families)
    k: torch.Tensor  # [B, T, Hkv, P] keys (rotated, for RoPE families)
    v: torch.Tensor  # [B, T, Hkv, P] values


class CausalSelfAttention(TokenMixer):
    """Softmax attention over s <= t (optionally within a sliding window); each query head is a feature.

    Subclasses compute the heads (``prepare``) and merge them (``project``). With grouped-query attention
    (Hkv < H) query head h reads key/value head ``h // (H / Hkv)``.
    """

    kind = MixerKind.ATTENTION

    def __init__(
        self,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        scaling: float,
        sliding_window: int | None,
        softcap: float | None = None,
    ) -> None:
        super().__init__()
        self.n_features = n_heads
        self.n_kv_heads, self.head_dim = n_kv_heads, head_dim
        self.scaling = scaling
        self.sliding_window = sliding_window
        self.softcap = softcap  # logits -> softcap tanh(logits / softcap) before the mask (Gemma 2)

    def per_query_head(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, Hkv, P] -> [B, T, H, P]: each key/value head serves H / Hkv consecutive query heads."""
        return x.repeat_interleave(self.n_features // self.n_kv_heads, dim=2)

    def allowed(self, seq_len: int, device: torch.device) -> torch.Tensor:
        """bool [T, T]: allowed[t, s] = s <= t, and t - s < sliding_window where the layer has one."""
        t = torch.arange(seq_len, device=device)[:, None]
        s = torch.arange(seq_len, device=device)[None, :]
        allowed = s <= t
        if self.sliding_window is not None:
            allowed = allowed & (t - s < self.sliding_window)
        return allowed

    def mix(self, p: AttentionInputs) -> torch.Tensor:
        """Clean attention with SDPA (soft-capped logits: the materialised terms): [B, T, H, P]."""
        if self.softcap is not None:  # SDPA has no soft-cap
            return self.terms(p).mixed().to(p.q.dtype)
        # SDPA works on [B, H, T, P]
        q, k, v = (x.transpose(1, 2) for x in (p.q, self.per_query_head(p.k), self.per_query_head(p.v)))
        seq_len = q.shape[2]
        if self.sliding_window is None or seq_len <= self.sliding_window:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.allowed(seq_len, q.device), scale=self.scaling)
        return y.transpose(1, 2)

    def terms(
        self,
        p: AttentionInputs,
        blocked: torch.Tensor | None = None,
        mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION,
        strict: bool = False,
        rows: torch.Tensor | None = None,
    ) -> MixingTerms:
        batch, seq_len = p.q.shape[:2]
        rows = torch.arange(seq_len, device=p.q.device) if rows is None else rows  # [R] output positions
        q, k = p.q[:, rows].float(), self.per_query_head(p.k).float()  # [B, R, H, P], [B, T, H, P]
        # logits[b, h, r, s] = c q[b, t, h] . k[b, s, h], t = rows[r]
        logits = torch.einsum("brhp,bshp->bhrs", q, k) * self.scaling
        if self.softcap is not None:
            logits = soft_cap(logits, self.softcap)  # capped first: a blocked edge is then -inf, as any masked one
        allowed = self.allowed(seq_len, q.device)[rows]  # [R, T]
        if blocked is not None:
            allowed = allowed & ~blocked[:, None, rows]  # [B, 1, R, T]: blocked edges leave the softmax
        weights = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)  # [B, H, R, T]
        # a row with no edge left is all -inf (NaN after the softmax): it receives nothing
        weights = torch.where(allowed.any(dim=-1, keepdim=True), weights, 0.0)
        values = self.per_query_head(p.v).float()  # [B, T, H, P]
        skip = values.new_zeros(batch, len(rows), *values.shape[2:])  # [B, R, H, P]
        return MixingTerms(matrix=weights, values=values, skip=skip)


def soft_cap(x: torch.Tensor, cap: float) -> torch.Tensor:
    """``cap tanh(x / cap)``: x squashed smoothly into (-cap, cap) (Gemma 2's attention and final logits)."""
    return torch.tanh(x / cap) * cap
