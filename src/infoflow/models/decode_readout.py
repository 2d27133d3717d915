"""The read-out of the Mamba-1 decode step over many knocked-out states, fused on CUDA.

    y[r, d] = sum_n C[r, n] exp(Delta[r, d] A[d, n]) h[r, d, n]

for R rows of [Di, N] states h. In the fast engine's info-flow sweeps this is the largest memory traffic:
written in torch it materialises Delta A, its exp and the product, four passes over [R, Di, N]; the Triton
kernel reads h once and writes [R, Di]. Triton ships with the CUDA builds of torch; without it (CPU builds)
the torch form runs, with a warning when the tensors are on a GPU.
"""

from __future__ import annotations

import warnings

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU builds of torch do not ship Triton
    triton = None

BLOCK_CHANNELS = 64


def decayed_readout_torch(state: torch.Tensor, delta: torch.Tensor, C: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """state [R, Di, N], delta [R, Di], C [R, N], A [Di, N] (fp32) -> y [R, Di]."""
    decayed = torch.exp(delta[..., None] * A) * state  # [R, Di, N]
    return torch.einsum("rdn,rn->rd", decayed, C)


if triton is not None:

    @triton.jit
    def _decayed_readout_kernel(
        state_ptr, delta_ptr, c_ptr, a_ptr, out_ptr, n_channels, n_state,
        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        """One row r and BLOCK_D channels d per program: y[r, d] = sum_n C[r, n] exp(Delta[r, d] A[d, n]) h[r, d, n]."""
        row = tl.program_id(0).to(tl.int64)
        d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        n = tl.arange(0, BLOCK_N)
        d_ok, n_ok = d < n_channels, n < n_state
        both_ok = d_ok[:, None] & n_ok[None, :]
        h = tl.load(state_ptr + (row * n_channels + d[:, None]) * n_state + n[None, :], mask=both_ok, other=0.0)
        a = tl.load(a_ptr + d[:, None] * n_state + n[None, :], mask=both_ok, other=0.0)
        delta = tl.load(delta_ptr + row * n_channels + d, mask=d_ok, other=0.0)
        c = tl.load(c_ptr + row * n_state + n, mask=n_ok, other=0.0)
        y = tl.sum(tl.exp(delta[:, None] * a) * c[None, :] * h, axis=1)
        tl.store(out_ptr + row * n_channels + d, y, mask=d_ok)


def decayed_readout(state: torch.Tensor, delta: torch.Tensor, C: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """state [R, Di, N], delta [R, Di], C [R, N], A [Di, N] (fp32) -> y [R, Di]; one Triton kernel on CUDA."""
    if not state.is_cuda:
        return decayed_readout_torch(state, delta, C, A)
    if triton is None:
        warnings.warn("Triton is not installed: the Mamba-1 decode read-out runs unfused (slower)", stacklevel=2)
        return decayed_readout_torch(state, delta, C, A)
    state, delta, C, A = (t.float().contiguous() for t in (state, delta, C, A))
    n_rows, n_channels, n_state = state.shape
    out = torch.empty(n_rows, n_channels, dtype=torch.float32, device=state.device)
    if n_rows:
        grid = (n_rows, triton.cdiv(n_channels, BLOCK_CHANNELS))
        _decayed_readout_kernel[grid](
            state, delta, C, A, out, n_channels, n_state,
            BLOCK_D=BLOCK_CHANNELS, BLOCK_N=triton.next_power_of_2(n_state),
        )  # fmt: skip
    return out
