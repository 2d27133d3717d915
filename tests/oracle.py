"""Shared helpers for oracle tests: random-weight transformers models, saved and loaded through our loader."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel

from infoflow.interventions.knockout import Knockout
from infoflow.interventions.layer_knockout import layer_knockouts
from infoflow.models.base import CausalLM
from infoflow.models.loading import load_hf_folder


def randomize_(model: PreTrainedModel, seed: int = 0) -> PreTrainedModel:
    """Give every parameter random values (default inits leave many at 0/1, which hides layout bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            scale = 0.5 if name.endswith(("A_log", "dt_proj.bias", "dt_bias", ".D")) else 0.2
            parameter.copy_(noise * scale + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return model.eval()


def save_and_load(model: PreTrainedModel, folder: Path) -> CausalLM:
    """``save_pretrained`` the transformers model and load it back as ours through the real loader."""
    model.save_pretrained(folder)
    ours, _ = load_hf_folder(folder)
    return ours


def max_logit_difference(theirs: PreTrainedModel, ours: CausalLM, input_ids: torch.Tensor) -> float:
    with torch.no_grad():
        return (theirs(input_ids).logits - ours(input_ids)).abs().max().item()


def mixer_reconstruction_error(ours: CausalLM, input_ids: torch.Tensor) -> float:
    """max |matrix @ values + skip - mix(...)| over every layer's mixer (hidden-attention export check)."""
    worst = 0.0
    with torch.no_grad():
        for layer, residual in enumerate(ours.residual_stream(input_ids)[:-1]):
            mixer = ours.mixer(layer)
            prepared = ours.block(layer).mixer_inputs(residual)
            terms = mixer.terms(prepared)
            assert terms.matrix.shape[1] == mixer.n_features
            assert torch.all(terms.matrix.triu(1) == 0), "hidden attention must be causal"
            worst = max(worst, (terms.mixed() - mixer.mix(prepared)).abs().max().item())
    return worst


def knocked_logits(ours: CausalLM, input_ids: torch.Tensor, knockout: Knockout) -> torch.Tensor:
    """Logits [B, T, V] of the reference path: the knockout applied in each of its layers."""
    return ours(input_ids, layer_knockouts(ours, knockout, input_ids.shape[1]))
