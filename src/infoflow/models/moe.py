"""Mixture-of-experts MLPs (Jamba, Granite 4.0-H, Nemotron-H): a router sends each position to k of E experts.

Per position x [D], with router logits l = W_r x [E], the routing of each family (as transformers does it):

    softmax_then_topk (Jamba):      p = softmax(l), keep the k largest p (divided by their sum if ``renormalize``)
    topk_then_softmax (Granite):    keep the k largest l, weights = softmax over those k
    sigmoid_groups (Nemotron-H):    p = sigmoid(l); choose among the ``top_groups`` best of ``n_groups`` expert
                                    groups by p + correction bias (a group's score: its two best), keep the k
                                    best there; weights = their p (divided by their sum if ``renormalize``)
                                    times ``scale``

    moe(x) = sum_{e kept} w_e expert_e(x)  (+ shared(x) where the family has a shared expert)
    expert_e(x) = down_e(act(gate_e x) * up_e x)  (gated)   or   down_e(act(up_e x))

An MLP reads one position: it never moves information between positions, so knockouts leave it as it is.
"""

from __future__ import annotations

import re
from collections import defaultdict
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from infoflow.models.families import StateDict


class Routing(StrEnum):
    SOFTMAX_THEN_TOPK = "softmax_then_topk"
    TOPK_THEN_SOFTMAX = "topk_then_softmax"
    SIGMOID_GROUPS = "sigmoid_groups"


class Router(nn.Module):
    """Which k experts each position goes to, and with what weight."""

    def __init__(
        self,
        d_model: int,
        n_experts: int,
        top_k: int,
        routing: Routing,
        *,
        renormalize: bool = False,
        scale: float = 1.0,
        n_groups: int = 1,
        top_groups: int = 1,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_experts, d_model))  # W_r [E, D]
        self.top_k, self.routing, self.renormalize, self.scale = top_k, routing, renormalize, scale
        self.n_groups, self.top_groups = n_groups, top_groups
        if routing is Routing.SIGMOID_GROUPS:  # added to the scores for the choice only
            self.correction_bias = nn.Parameter(torch.zeros(n_experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, D] -> expert index [N, k], weights [N, k] (x's dtype; fp32 for sigmoid routing)."""
        if self.routing is Routing.SIGMOID_GROUPS:
            return self.sigmoid_groups(F.linear(x.float(), self.weight.float()))
        logits = F.linear(x, self.weight)  # [N, E]
        if self.routing is Routing.TOPK_THEN_SOFTMAX:
            top_logits, index = logits.float().topk(self.top_k, dim=-1)
            return index, torch.softmax(top_logits, dim=-1).to(x.dtype)
        weights, index = torch.softmax(logits, dim=-1, dtype=torch.float).topk(self.top_k, dim=-1)
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return index, weights.to(x.dtype)

    def sigmoid_groups(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits [N, E] fp32 -> index [N, k], weights [N, k] fp32 (DeepSeek-V3 style group-limited routing)."""
        scores = logits.sigmoid()
        choice = scores + self.correction_bias.float()  # [N, E]
        grouped = choice.unflatten(-1, (self.n_groups, -1))  # [N, G, E / G]
        group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # [N, G]
        groups = group_scores.topk(self.top_groups, dim=-1, sorted=False).indices
        kept = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, groups, True)  # [N, G]
        choice = grouped.masked_fill(~kept[..., None], float("-inf")).flatten(1)
        index = choice.topk(self.top_k, dim=-1, sorted=False).indices
        weights = scores.gather(1, index)
        if self.renormalize:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return index, weights * self.scale


class Experts(nn.Module):
    """E MLPs with stacked weights: ``up_proj`` [E, I', D] (I' = 2I holding [gate; up] when gated, else I) and
    ``down_proj`` [E, D, I]."""

    def __init__(self, n_experts: int, d_model: int, d_inner: int, activation: str, gated: bool) -> None:
        super().__init__()
        self.up_proj = nn.Parameter(torch.empty(n_experts, (2 if gated else 1) * d_inner, d_model))
        self.down_proj = nn.Parameter(torch.empty(n_experts, d_model, d_inner))
        self.act = ACT2FN[activation]
        self.gated = gated

    def forward(self, x: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x [N, D], index and weights [N, k] -> sum_j weights[n, j] expert_{index[n, j]}(x[n]) [N, D].

        Expert by expert in increasing order, accumulated in the weights' dtype, as transformers does; but each
        expert runs on all N rows (weight 0 where it is not chosen): a matmul's row depends on how many rows it
        has, so running an expert on its chosen rows only would let a change of one position's routing change
        other positions' outputs by rounding (and a knockout must leave earlier positions exactly as they were).
        """
        dense = torch.zeros(*index.shape[:-1], self.up_proj.shape[0], dtype=weights.dtype, device=x.device)
        dense.scatter_(-1, index, weights)  # [N, E]: w[n, e], 0 where e is not among n's k experts
        out = torch.zeros(x.shape, dtype=weights.dtype, device=x.device)
        for expert in index.unique().tolist():  # experts no row chose would add exactly 0
            hidden = F.linear(x, self.up_proj[expert])
            if self.gated:
                gate, up = hidden.chunk(2, dim=-1)
                hidden = self.act(gate) * up
            else:
                hidden = self.act(hidden)
            out = out + F.linear(hidden, self.down_proj[expert]) * dense[:, expert, None]
        return out.to(x.dtype)


class MoE(nn.Module):
    """``sum_{e kept} w_e expert_e(x)``, plus ``shared(x)`` where given: [B, T, D] -> [B, T, D]."""

    def __init__(self, router: Router, experts: Experts, shared: nn.Module | None = None) -> None:
        super().__init__()
        self.router = router
        self.experts = experts
        self.shared = shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])  # [B * T, D]
        out = self.experts(flat, *self.router(flat)).view_as(x)
        return out if self.shared is None else out + self.shared(x)


EXPERT_WEIGHT = re.compile(r"^(?P<prefix>.+\.experts)\.(?P<expert>\d+)\.(?P<name>\w+)\.weight$")


def stack_experts(state_dict: StateDict, stacked: dict[str, tuple[str, ...]]) -> dict[str, torch.Tensor]:
    """Checkpoints' per-expert weights ``<prefix>.experts.<e>.<name>.weight`` -> our ``<prefix>.experts.<target>``
    [E, ...]: ``stacked`` maps each target to the names it joins along dim 0 (e.g. ``up_proj`` <- gate_proj
    and up_proj of a gated expert). Other weights pass unchanged."""
    ours = {key: value for key, value in state_dict.items() if not EXPERT_WEIGHT.match(key)}
    per_expert: dict[tuple[str, str], dict[int, torch.Tensor]] = defaultdict(dict)  # (prefix, name) -> e -> W
    for key, value in state_dict.items():
        if match := EXPERT_WEIGHT.match(key):
            per_expert[match["prefix"], match["name"]][int(match["expert"])] = value
    for prefix in {prefix for prefix, _ in per_expert}:
        for target, names in stacked.items():
            experts = sorted(per_expert[prefix, names[0]])
            ours[f"{prefix}.{target}"] = torch.stack(
                [torch.cat([per_expert[prefix, name][e] for name in names]) for e in experts]
            )
    return ours
