"""The reference engine: one full forward pass per knockout, masks applied. Obviously correct; the oracle."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from infoflow.engines.base import Engine, last_token_probabilities
from infoflow.interventions.knockout import Knockout
from infoflow.interventions.layer_knockout import layer_knockouts


class ReferenceEngine(Engine):
    """Runs every knockout as its own full forward pass of the prompt (batch of one)."""

    name = "reference"

    @torch.no_grad()
    def probabilities(self, input_ids: torch.Tensor, knockouts: Sequence[Knockout | None]) -> torch.Tensor:
        prompt = input_ids.view(1, -1).to(self.device)
        seq_len = prompt.shape[1]
        rows = [
            last_token_probabilities(self.model(prompt, layer_knockouts(self.model, knockout, seq_len)))[0]
            for knockout in knockouts
        ]
        return torch.stack(rows) if rows else torch.empty(0, self.model.lm_head.out_features)
