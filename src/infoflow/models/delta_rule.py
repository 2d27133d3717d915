"""The gated delta rule (Gated DeltaNet: Qwen3-Next, Qwen3.5, OLMo-Hybrid) as pure functions.

Per head, with l2-normalised keys k_t [K], queries q_t [K] (l2-normalised, then scaled by 1/sqrt(K)), values
v_t [V], a gate in log space g_t <= 0 and a write strength beta_t = sigmoid(b_t) in (0, 1), the state
S_t [K, V] follows

    S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,        o_t = S_t^T q_t

(transformers' convention: decay, then erase what the state predicts for k_t and write v_t in its place).
Unrolled over the prompt it is an exact hidden attention (the UT / WY form of Yang et al. 2024):

    Gamma[t, s] = exp(sum_{r=s+1..t} g_r)                                    cumulative gates, s <= t
    W = (Q K^T) . Gamma . M                                                   M causal (diagonal included)
    L = diag(beta) (tril(K K^T, -1) . Gamma)                                  the erasure between writes
    O = W (I + L)^{-1} diag(beta) V  =  A V,   A = W (I + L)^{-1} diag(beta)

A[t, s] is what v_s contributes to o_t, through s's own write and through every later write's correction.

Removing an edge t <- s has three readings (``knockout_hidden_attention``): A[t, s] = 0 ("write-only": s
writes no value for t, its erasure of earlier memory stays; equal to v_s = 0 in t's view); beta_s = 0
("write-and-erase": s neither writes nor erases); beta_s = 0 and g_s = 0 ("zero-delta": the step of s is
skipped, as if s never entered the state). Shapes: B batch, T positions, H heads, K key and V value width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from infoflow.models.modes import KnockoutMode
from infoflow.models.ssm import segsum

L2_EPS = 1e-6  # transformers' (and the FLA kernels') l2norm: x / sqrt(sum(x^2) + eps)


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """x [..., K] -> x / sqrt(sum(x^2) + eps) (fp32 in, fp32 out)."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + L2_EPS)


def normalize_qk(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw q, k [B, T, H, K] -> fp32 (l2norm(q) / sqrt(K), l2norm(k)), as the delta rule reads them."""
    return l2norm(q.float()) * q.shape[-1] ** -0.5, l2norm(k.float())


def recurrence(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_gate: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """The plain recurrence, one step per position: o [B, T, H, V] (fp32).

    q, k [B, T, H, K] (normalised: ``normalize_qk``), v [B, T, H, V], log_gate and beta [B, T, H].
    """
    batch, seq_len, heads, key_dim = k.shape
    state = v.new_zeros(batch, heads, key_dim, v.shape[-1], dtype=torch.float32)  # S [B, H, K, V]
    outputs = []
    for t in range(seq_len):
        state = state * log_gate[:, t, :, None, None].exp()  # decay
        predicted = torch.einsum("bhkv,bhk->bhv", state, k[:, t])  # S^T k_t
        correction = beta[:, t, :, None] * (v[:, t] - predicted)  # beta_t (v_t - S^T k_t)
        state = state + k[:, t, :, :, None] * correction[:, :, None, :]  # + k_t correction^T
        outputs.append(torch.einsum("bhkv,bhk->bhv", state, q[:, t]))  # S_t^T q_t
    return torch.stack(outputs, dim=1)


def chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_gate: torch.Tensor,
    beta: torch.Tensor,
    chunk_size: int = 64,
) -> torch.Tensor:
    """The chunked form (transformers' ``torch_chunk_gated_delta_rule``): exact UT form within chunks of
    ``chunk_size`` positions, a scan over chunk states between them. Same arguments and result as
    :func:`recurrence`."""
    seq_len = q.shape[1]
    pad = -seq_len % chunk_size  # zero padding at the end: beta = 0 and g = 0 there, outputs cut off

    # [B, T, H, ...] -> [B, H, c, l, ...]: c chunks of l = chunk_size positions
    def chunks(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x.float(), (0, 0) * (x.dim() - 2) + (0, pad)).transpose(1, 2).unflatten(2, (-1, chunk_size))

    q, k, v, g, beta = (chunks(x) for x in (q, k, v, log_gate, beta))
    g_cum = g.cumsum(-1)  # [B, H, c, l]: log decay from the chunk's start to l
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
    gamma = (g_cum[..., :, None] - g_cum[..., None, :]).masked_fill(~causal, float("-inf")).exp()  # [B, H, c, l, l]
    # within a chunk: (I + L) U = diag(beta) V and (I + L) W_k = diag(beta) exp(g_cum) K
    ut_system = ((beta[..., None] * k) @ k.transpose(-1, -2)) * gamma  # unit diagonal implied
    new_values = torch.linalg.solve_triangular(ut_system, beta[..., None] * v, upper=False, unitriangular=True)
    decayed_keys = torch.linalg.solve_triangular(
        ut_system, (beta * g_cum.exp())[..., None] * k, upper=False, unitriangular=True
    )
    intra = (q @ k.transpose(-1, -2)) * gamma  # W within the chunk [B, H, c, l, l]
    state = q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])  # S entering the chunk [B, H, K, V]
    outputs = []
    for c in range(q.shape[2]):
        corrected = new_values[:, :, c] - decayed_keys[:, :, c] @ state  # U minus what the state predicts
        read = (q[:, :, c] * g_cum[:, :, c, :, None].exp()) @ state  # the entering state, decayed to l
        outputs.append(read + intra[:, :, c] @ corrected)
        to_end = (g_cum[:, :, c, -1:] - g_cum[:, :, c]).exp()  # [B, H, l]: decay from l to the chunk's end
        written = (k[:, :, c] * to_end[..., None]).transpose(-1, -2) @ corrected  # [B, H, K, V]
        state = state * g_cum[:, :, c, -1, None, None].exp() + written
    return torch.stack(outputs, dim=2).flatten(2, 3)[:, :, :seq_len].transpose(1, 2)  # [B, T, H, V]


def hidden_attention(
    q: torch.Tensor, k: torch.Tensor, log_gate: torch.Tensor, beta: torch.Tensor, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """A [B, H, R, T] with o = A v: A = W (I + L)^{-1} diag(beta), for output positions ``rows`` [R]
    (default: all). Arguments as :func:`recurrence`.

    Only rows R of W are needed: X (I + L) = W[rows] is one triangular solve from the right.
    """
    seq_len = q.shape[1]
    rows = torch.arange(seq_len, device=q.device) if rows is None else rows
    q, k, beta = q.float(), k.float(), beta.float().transpose(1, 2)  # beta [B, H, T]
    log_gamma = segsum(log_gate.float().transpose(1, 2))  # [B, H, T, T], -inf above the diagonal
    # W[b, h, r, s] = q[t] . k[s] Gamma[t, s], t = rows[r]; L[b, h, i, j] = beta_i k_i . k_j Gamma[i, j], j < i
    weights = torch.einsum("brhk,bshk->bhrs", q[:, rows], k) * log_gamma[:, :, rows].exp()
    erasure = beta[..., None] * torch.einsum("bihk,bjhk->bhij", k, k) * log_gamma.exp()  # unit diagonal implied
    solved = torch.linalg.solve_triangular(erasure, weights, upper=False, left=False, unitriangular=True)
    return solved * beta[:, :, None, :]  # X diag(beta)


def knockout_hidden_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    log_gate: torch.Tensor,
    beta: torch.Tensor,
    blocked: torch.Tensor | None,
    mode: KnockoutMode,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """A [B, H, R, T] with the ``blocked`` [B, T, T] edges removed in ``mode`` (see the module docstring).

    Zero-attention (write-only) zeroes A[t, s] only. Write-and-erase and zero-delta change the sources
    themselves: each batch entry removes the union of its blocked sources from its whole run, so an entry
    should then block edges of a single target row.
    """
    if blocked is not None and mode in (KnockoutMode.WRITE_AND_ERASE, KnockoutMode.ZERO_DELTA):
        sources = blocked.any(dim=-2)[..., None]  # [B, T, 1]: sources of some blocked edge
        beta = beta.masked_fill(sources, 0.0)  # no write, no erase
        if mode is KnockoutMode.ZERO_DELTA:
            log_gate = log_gate.masked_fill(sources, 0.0)  # no decay either: the step is skipped
    matrix = hidden_attention(q, k, log_gate, beta, rows)
    if blocked is None:
        return matrix
    rows = torch.arange(q.shape[1], device=q.device) if rows is None else rows
    return matrix.masked_fill(blocked[:, None, rows], 0.0)
