"""What every knockout engine offers: next-token probabilities per knockout, and the target's score."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from infoflow.interventions.knockout import Knockout
from infoflow.models.base import CausalLM


@dataclass(frozen=True)
class TargetScores:
    """How the target token fares under each of K knockouts."""

    probability: torch.Tensor  # [K] fp32, p(target | prompt, knockout)
    top1: torch.Tensor  # [K] bool, the target is still the most probable token

    @classmethod
    def from_probabilities(cls, probabilities: torch.Tensor, target_token: int) -> TargetScores:
        """From next-token probabilities [K, V] of one prompt (on the host; waits for the device)."""
        targets = torch.full((len(probabilities),), target_token, device=probabilities.device)
        probability, top1 = target_scores(probabilities, targets)
        return cls(probability=probability.cpu(), top1=top1.cpu())


def target_scores(probabilities: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """p(target) [K] and whether the target is the most probable token [K] (ties count), from next-token
    probabilities [K, V] and each row's target token [K], on the probabilities' device."""
    probability = probabilities.gather(1, targets[:, None])[:, 0]
    return probability, probability >= probabilities.max(dim=-1).values


class Engine(ABC):
    """Runs knockouts of one model on one prompt at a time."""

    name: str
    prompts_per_call: int = 32  # prompts a runner hands over at once (and stores in one transaction)

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


ENGINES = ("fast", "reference")


def make_engine(name: str, model: CausalLM, batch_size: int | None = None) -> Engine:
    """The engine ``name`` (fast or reference) on ``model``; ``batch_size``: knockout rows per batched tail pass
    of the fast engine (None: it sizes them)."""
    from infoflow.engines.fast import FastEngine  # here: both engines import this module
    from infoflow.engines.reference import ReferenceEngine

    if name == "fast":
        return FastEngine(model, max_batch=batch_size)
    if name == "reference":
        return ReferenceEngine(model)
    raise ValueError(f"unknown engine {name!r}; choose {' or '.join(ENGINES)}")
