"""The reference engine: one full forward pass per knockout, masks applied. Obviously correct; the oracle."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from infoflow.knockout.spec import Knockout
from infoflow.models.base import CausalLM


def last_token_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """softmax of the logits [B, T, V] at the last position, in fp32: [B, V]."""
    return torch.softmax(logits[:, -1].float(), dim=-1)


class ReferenceEngine:
    """Runs every knockout as its own full forward pass of the prompt (batch of one)."""

    name = "reference"

    def __init__(self, model: CausalLM) -> None:
        self.model = model

    @torch.no_grad()
    def probabilities(self, input_ids: torch.Tensor, knockouts: Sequence[Knockout | None]) -> torch.Tensor:
        """Next-token probabilities [K, V] after the prompt ``input_ids`` [T], one row per knockout."""
        prompt = input_ids.view(1, -1).to(self.model.lm_head.weight.device)
        rows = [last_token_probabilities(self.model(prompt, knockout))[0] for knockout in knockouts]
        return torch.stack(rows) if rows else torch.empty(0, self.model.lm_head.out_features)
