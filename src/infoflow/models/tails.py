"""The layout of a fast-engine tail pass: A rows, each a variant of one of P prompts whose clean run is cached.

Mixers use it in their tail math (``TokenMixer.prepare_tail``, ``mix_last_row``) to read, per row, its own
prompt's clean run.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from infoflow.models.transfer import to_device_async


def map_tensor_fields(prepared: Any, function: Callable[[str, torch.Tensor], torch.Tensor]) -> Any:
    """A prepared-inputs dataclass with ``function(name, value)`` applied to each of its tensor fields."""
    changes = {
        f.name: function(f.name, value)
        for f in dataclasses.fields(prepared)
        if isinstance(value := getattr(prepared, f.name), torch.Tensor)
    }
    return dataclasses.replace(prepared, **changes)


def repeat_batch(prepared: Any, repeats: int) -> Any:
    """Repeat every tensor field of a prepared-inputs dataclass ``repeats`` times along dim 0 (interleaved)."""
    return map_tensor_fields(prepared, lambda _, value: value.repeat_interleave(repeats, dim=0))


def batch_rows(prepared: Any, index: torch.Tensor) -> Any:
    """Batch entries ``index`` [P'] of every tensor field of a prepared-inputs dataclass."""
    return map_tensor_fields(prepared, lambda _, value: value[index])


@dataclass(frozen=True)
class TailRows:
    """The prompt each of A tail rows belongs to, so that knockouts of several prompts run as one batch.

    Per-prompt tensors [P, ...] (the clean run) reach the rows by ``gather``. Work that combines each row with
    its own prompt's per-prompt tensors runs on the *padded* layout [P, M, ...] (``pad``/``unpad``): row a
    sits at [prompt[a], rank[a]], M is the most rows one prompt has, and a batched matmul over P does it all.
    """

    prompt: torch.Tensor  # [A] long: the row's prompt, an index into the clean run's batch
    rank: torch.Tensor  # [A] long: the row's rank among the rows of its prompt
    n_prompts: int  # P
    most_rows: int  # M: the most rows one prompt has
    running_most: tuple[int, ...]  # running_most[i]: M of the first i + 1 rows (of the batch ``head`` came from)

    @classmethod
    def of(cls, prompts: Sequence[int], n_prompts: int, device: torch.device) -> TailRows:
        """Rows owned by ``prompts`` (host ints in 0..n_prompts-1), ranked in their order."""
        seen: Counter[int] = Counter()
        ranks, running_most, most = [], [], 0
        for prompt in prompts:
            ranks.append(seen[prompt])
            seen[prompt] += 1
            most = max(most, seen[prompt])
            running_most.append(most)
        return cls(
            prompt=to_device_async(torch.tensor(list(prompts), dtype=torch.long), device),
            rank=to_device_async(torch.tensor(ranks, dtype=torch.long), device),
            n_prompts=n_prompts,
            most_rows=most,
            running_most=tuple(running_most),
        )

    def __len__(self) -> int:
        return len(self.prompt)

    def head(self, n_rows: int) -> TailRows:
        """The first ``n_rows`` rows."""
        most = self.running_most[n_rows - 1] if n_rows else 0
        return TailRows(self.prompt[:n_rows], self.rank[:n_rows], self.n_prompts, most, self.running_most)

    def gather(self, value: torch.Tensor) -> torch.Tensor:
        """[P, ...] -> [A, ...]: each row's prompt entry (a broadcast view when P = 1)."""
        if value.shape[0] == 1:
            return value.expand(len(self), *value.shape[1:])
        return value[self.prompt]

    def pad(self, rows: torch.Tensor) -> torch.Tensor:
        """[A, ...] -> [P, M, ...], zeros where a prompt has fewer than M rows."""
        padded = rows.new_zeros(self.n_prompts, self.most_rows, *rows.shape[1:])
        padded[self.prompt, self.rank] = rows
        return padded

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """[P, M, ...] -> [A, ...]."""
        return padded[self.prompt, self.rank]


def join_positions(prefix: Any, tail: Any, start: int, rows: TailRows, first: int = 0) -> Any:
    """Positions ``first..start-1`` of ``prefix`` (the clean run of P prompts, each row reading its own
    prompt's) followed by all of ``tail`` [A, T - start]."""
    return map_tensor_fields(
        tail, lambda name, value: torch.cat([rows.gather(getattr(prefix, name)[:, first:start]), value], dim=1)
    )
