"""The Mamba-1 decode read-out: torch form against the step-by-step formula; the Triton kernel against the
torch form (on a CUDA machine with Triton; CI has neither and skips it)."""

from __future__ import annotations

import pytest
import torch

from infoflow.models import decode_readout
from infoflow.models.decode_readout import decayed_readout, decayed_readout_torch


def random_inputs(n_rows: int, n_channels: int, n_state: int, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(n_rows * 1000 + n_channels + n_state)
    state = torch.randn(n_rows, n_channels, n_state, generator=generator)
    delta = torch.rand(n_rows, n_channels, generator=generator)
    C = torch.randn(n_rows, n_state, generator=generator)
    A = -torch.rand(n_channels, n_state, generator=generator) * 4
    return tuple(t.to(device) for t in (state, delta, C, A))


def test_torch_form_is_the_decay_then_read_out_formula():
    state, delta, C, A = random_inputs(5, 7, 3)
    expected = torch.zeros(5, 7)
    for r in range(5):
        for d in range(7):
            expected[r, d] = sum(C[r, n] * torch.exp(delta[r, d] * A[d, n]) * state[r, d, n] for n in range(3))
    assert torch.allclose(decayed_readout(state, delta, C, A), expected, atol=1e-6)


@pytest.mark.skipif(
    not torch.cuda.is_available() or decode_readout.triton is None, reason="needs a CUDA GPU and Triton"
)
@pytest.mark.parametrize("shape", [(1, 64, 16), (37, 100, 16), (300, 4096, 16), (9, 130, 5), (0, 64, 16)])
def test_triton_kernel_matches_torch_form(shape):
    inputs = random_inputs(*shape, device="cuda")
    fused = decayed_readout(*inputs)
    assert fused.shape == shape[:2]
    if shape[0]:
        assert (fused - decayed_readout_torch(*inputs)).abs().max().item() <= 1e-5
