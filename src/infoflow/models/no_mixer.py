"""The token mixer of a layer that has none (Nemotron-H's MLP-only layers): nothing moves between positions.

Such a layer is ``h + mlp(norm(h))``. It stays a :class:`~infoflow.models.base.Block` of its own (so layer
indices are the checkpoint's and ``CausalLM.layer_kinds`` says ``none`` for it) whose mixer adds exactly
zero: its hidden attention is the zero matrix,

    y[t] = sum_s 0 * v[s] + 0 = 0,

over one feature, so that every consumer of mixing terms (knockouts, exports, the fast engine's tails)
runs unchanged. A knockout there removes nothing: the layer has no edge to remove.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infoflow.models.base import MixingTerms, TokenMixer
from infoflow.models.modes import KnockoutMode, MixerKind


@dataclass
class NoMixerInputs:
    values: torch.Tensor  # [B, T, 1, 1] zeros in the layer's dtype


class NoMixer(TokenMixer):
    kind = MixerKind.NONE
    feature_name = "none"

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.n_features = 1
        self.d_model = d_model

    def prepare(self, hidden: torch.Tensor) -> NoMixerInputs:
        return NoMixerInputs(values=hidden.new_zeros(*hidden.shape[:2], 1, 1))

    def mix(self, p: NoMixerInputs) -> torch.Tensor:
        return p.values

    def terms(
        self,
        p: NoMixerInputs,
        blocked: torch.Tensor | None = None,
        mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION,
        strict: bool = False,
        rows: torch.Tensor | None = None,
    ) -> MixingTerms:
        batch, seq_len = p.values.shape[:2]
        n_rows = seq_len if rows is None else len(rows)
        values = p.values.float()
        matrix = values.new_zeros(batch, 1, n_rows, seq_len)  # [B, 1, R, T]
        return MixingTerms(matrix=matrix, values=values, skip=values.new_zeros(batch, n_rows, 1, 1))

    def project(self, mixed: torch.Tensor, p: NoMixerInputs) -> torch.Tensor:
        return mixed.new_zeros(*mixed.shape[:2], self.d_model)  # [B, T, D]: the layer's update is its MLP's
