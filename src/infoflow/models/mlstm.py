"""The mLSTM (xLSTM's matrix memory) as pure functions.

Per head, with queries q_t, keys k_t [K] (q scaled by 1/sqrt(K)), values v_t [V], an exponential input gate
with pre-activation i_t and a forget gate f_t = sigmoid(f~_t) (log f_t = logsigmoid(f~_t)), the memory
C_t [K, V], the normaliser n_t [K] and the max-stabiliser m_t follow (transformers' native kernels)

    m_t = max(log f_t + m_{t-1}, i_t)                                             (m_{-1} = 0)
    C_t = e^{log f_t + m_{t-1} - m_t} C_{t-1} + e^{i_t - m_t} k_t v_t^T
    n_t = e^{log f_t + m_{t-1} - m_t} n_{t-1} + e^{i_t - m_t} k_t
    h_t = C_t^T q_t / (max(|n_t . q_t|, e^{-m_t}) + eps)

Unrolled over the prompt it is an exact hidden attention (the parallel form of Beck et al. 2024):

    D[t, s] = sum_{r=s+1..t} log f_r + i_s   (s <= t)          the gate from s to t, in log space
    m_t     = max(sum_{r=0..t} log f_r, max_s D[t, s])          the stabiliser (the first term: m_{-1} = 0)
    W[t, s] = (q_t . k_s) e^{D[t, s] - m_t}
    A[t, s] = W[t, s] / (max(|sum_s W[t, s]|, e^{-m_t}) + eps),        h_t = sum_s A[t, s] v_s

Removing an edge t <- s (``hidden_attention``): s leaves the numerator, the normaliser and the stabiliser
(``zero-attention``, the default, = ``renormalize``: exactly i_s = -inf for t, s writes nothing into C or n),
the numerator only (``numerator-only``: the normaliser and stabiliser stay clean), or its step is skipped
(``zero-delta``: i_s = -inf and log f_s = 0, s neither writes nor forgets). Shapes: B batch, T positions,
H heads, K key and V value width.
"""

from __future__ import annotations

import torch

from infoflow.models.modes import KnockoutMode
from infoflow.models.ssm import segsum


def recurrence(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, log_f: torch.Tensor, eps: float
) -> torch.Tensor:
    """h [B, T, H, V] (fp32) by the stabilised recurrence, one step per position: q, k [B, T, H, K],
    v [B, T, H, V], i and log_f [B, T, H]."""
    q, k, v, i, log_f = (x.float() for x in (q, k, v, i, log_f))
    q = q * q.shape[-1] ** -0.5
    batch, seq_len, heads, key_dim = k.shape
    memory = v.new_zeros(batch, heads, key_dim, v.shape[-1])  # C [B, H, K, V]
    normaliser = k.new_zeros(batch, heads, key_dim)  # n [B, H, K]
    stabiliser = k.new_zeros(batch, heads)  # m [B, H]
    outputs = []
    for t in range(seq_len):
        new = torch.maximum(log_f[:, t] + stabiliser, i[:, t])
        forget, write = torch.exp(log_f[:, t] + stabiliser - new), torch.exp(i[:, t] - new)  # [B, H]
        memory = forget[..., None, None] * memory + write[..., None, None] * k[:, t, :, :, None] * v[:, t, :, None, :]
        normaliser = forget[..., None] * normaliser + write[..., None] * k[:, t]
        stabiliser = new
        numerator = torch.einsum("bhkv,bhk->bhv", memory, q[:, t])
        dot = torch.einsum("bhk,bhk->bh", normaliser, q[:, t])
        outputs.append(numerator / (torch.maximum(dot.abs(), torch.exp(-new))[..., None] + eps))
    return torch.stack(outputs, dim=1)


def hidden_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    i: torch.Tensor,
    log_f: torch.Tensor,
    eps: float,
    blocked: torch.Tensor | None = None,
    mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """A [B, H, R, T] with h = A v, for output positions ``rows`` [R] (default: all), with the ``blocked``
    [B, T, T] edges removed in ``mode`` (see the module docstring). Arguments as :func:`recurrence`.

    Zero-delta changes the sources themselves: each batch entry skips the union of its blocked sources in its
    whole run, so an entry should then block edges of a single target row.
    """
    seq_len = q.shape[1]
    rows = torch.arange(seq_len, device=q.device) if rows is None else rows
    log_f, i = log_f.float().transpose(1, 2), i.float().transpose(1, 2)  # [B, H, T]
    if blocked is not None and mode is KnockoutMode.ZERO_DELTA:
        log_f = log_f.masked_fill(blocked.any(dim=-2)[:, None], 0.0)  # skipped steps forget nothing
    # log D[b, h, r, s] = sum_{r'=s+1..t} log f[r'] + i[s], t = rows[r] (-inf for s > t)
    log_d = segsum(log_f, rows) + i[:, :, None, :]
    start = log_f.cumsum(dim=-1)[:, :, rows]  # [B, H, R]: the initial state's gate, sum_{r=0..t} log f
    kept = log_d if blocked is None else log_d.masked_fill(blocked[:, None, rows], float("-inf"))
    stabilised = log_d if mode is KnockoutMode.NUMERATOR_ONLY else kept  # the normaliser's terms
    m = torch.maximum(start, stabilised.amax(dim=-1))  # [B, H, R]
    scores = torch.einsum("brhk,bshk->bhrs", q.float()[:, rows], k.float()) * q.shape[-1] ** -0.5
    denominator = (scores * torch.exp(stabilised - m[..., None])).sum(dim=-1).abs()
    denominator = torch.maximum(denominator, torch.exp(-m)) + eps  # [B, H, R]
    return scores * torch.exp(kept - m[..., None]) / denominator[..., None]
