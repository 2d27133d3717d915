"""Top-1 accuracy of a causal LM on fact prompts: does the target's first token come first at the last position?"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from infoflow.data.prompts import FactPrompt


def pad_right(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows right-padded with ``pad_id``: ids [N, T] and lengths [N]."""
    lengths = torch.tensor([len(row) for row in rows])
    ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids, lengths


def _rate(hits: list[bool]) -> float:
    return sum(hits) / len(hits)


@torch.no_grad()
def evaluate_prompts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[FactPrompt],
    batch_size: int = 512,
) -> dict[str, Any]:
    """Top-1 accuracy and mean probability of the target's first token, overall, by template order and relation.

    Prompts share a batch right-padded: in a causal model no real position sees the padding after it.
    """
    device = next(model.parameters()).device
    model.eval()
    correct: list[bool] = []
    probability: list[float] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        ids, lengths = pad_right(tokenizer([p.prompt for p in batch])["input_ids"], tokenizer.pad_token_id)
        targets = torch.tensor([tokenizer(p.target, add_special_tokens=False)["input_ids"][0] for p in batch])
        ids, lengths, targets = ids.to(device), lengths.to(device), targets.to(device)
        mask = (torch.arange(ids.shape[1], device=device)[None, :] < lengths[:, None]).long()  # [B, T]
        logits = model(ids, attention_mask=mask, use_cache=False).logits.float()  # [B, T, V]
        rows = torch.arange(len(batch), device=device)
        last = logits[rows, lengths - 1]  # [B, V], the next-token logits after each prompt
        correct += (last.argmax(-1) == targets).tolist()
        probability += last.softmax(-1)[rows, targets].tolist()
    by_relation: dict[str, list[bool]] = defaultdict(list)
    by_order: dict[str, list[bool]] = defaultdict(list)
    for prompt, hit in zip(prompts, correct, strict=True):
        by_relation[str(prompt.relation)].append(hit)
        by_order["subject_first" if prompt.extras["subject_first"] else "relation_first"].append(hit)
    return {
        "n": len(prompts),
        "top1": _rate(correct),
        "mean_target_prob": sum(probability) / len(prompts),
        "top1_by_order": {order: _rate(hits) for order, hits in by_order.items()},
        "top1_by_relation": {relation: _rate(hits) for relation, hits in by_relation.items()},
    }
