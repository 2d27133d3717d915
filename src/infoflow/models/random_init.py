"""Random-weight models of any supported config, for benchmarks at real shapes and offline smoke runs."""

from __future__ import annotations

import torch
from transformers import PretrainedConfig

from infoflow.models.base import CausalLM
from infoflow.models.families import family_for


def initial_value(name: str, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Matrices N(0, 0.02), norm weights and D 1, biases 0, Mamba decays A = -(1..N) (per state or head)."""
    if name.endswith("A_log"):
        return torch.log(torch.arange(1, shape[-1] + 1, dtype=torch.float32)).expand(shape).contiguous()
    if name.endswith(".D") or (len(shape) == 1 and "norm" in name and name.endswith("weight")):
        return torch.ones(shape)
    if len(shape) == 1:
        return torch.zeros(shape)
    return torch.randn(shape, generator=generator) * 0.02


def random_model(
    config: PretrainedConfig,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> CausalLM:
    """Our model for ``config`` with seeded random weights (see :func:`initial_value`)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = family_for(config.model_type).build(config)
    weights = {name: initial_value(name, p.shape, generator) for name, p in model.state_dict().items()}
    model.load_state_dict(weights, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
