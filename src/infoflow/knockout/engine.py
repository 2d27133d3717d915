"""What every knockout engine offers: next-token probabilities per knockout, and the target's score."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from infoflow.knockout.spec import Knockout
from infoflow.models.base import CausalLM


@dataclass(frozen=True)
class TargetScores:
    """How the target token fares under each of K knockouts."""

    probability: torch.Tensor  # [K] fp32, p(target | prompt, knockout)
    top1: torch.Tensor  # [K] bool, the target is still the most probable token

    @classmethod
    def from_probabilities(cls, probabilities: torch.Tensor, target_token: int) -> TargetScores:
        """From next-token probabilities [K, V]; ``top1`` means p(target) equals the maximum (ties count)."""
        target = probabilities[:, target_token]
        return cls(probability=target.cpu(), top1=(target >= probabilities.max(dim=-1).values).cpu())


class Engine(ABC):
    """Runs knockouts of one model on one prompt at a time."""

    name: str

    def __init__(self, model: CausalLM) -> None:
        self.model = model

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @abstractmethod
    def probabilities(self, input_ids: torch.Tensor, knockouts: Sequence[Knockout | None]) -> torch.Tensor:
        """Next-token probabilities [K, V] (fp32) after the prompt ``input_ids`` [T], one row per knockout
        (None = the clean run)."""

    def probabilities_many(
        self, requests: Sequence[tuple[torch.Tensor, Sequence[Knockout | None]]]
    ) -> list[torch.Tensor]:
        """``probabilities`` of several (prompt, knockouts) requests; engines may batch across prompts."""
        return [self.probabilities(input_ids, knockouts) for input_ids, knockouts in requests]

    def scores(self, input_ids: torch.Tensor, target_token: int, knockouts: Sequence[Knockout | None]) -> TargetScores:
        return TargetScores.from_probabilities(self.probabilities(input_ids, knockouts), target_token)

    def scores_many(
        self, requests: Sequence[tuple[torch.Tensor, int, Sequence[Knockout | None]]]
    ) -> list[TargetScores]:
        """``scores`` of several (prompt, target token, knockouts) requests."""
        probabilities = self.probabilities_many([(ids, knockouts) for ids, _, knockouts in requests])
        return [
            TargetScores.from_probabilities(p, target)
            for p, (_, target, _) in zip(probabilities, requests, strict=True)
        ]


def last_token_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """softmax of the logits [B, T, V] at the last position, in fp32: [B, V]."""
    return torch.softmax(logits[:, -1].float(), dim=-1)
