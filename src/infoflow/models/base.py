"""The interface every architecture family implements, and the knockout of one mixer layer.

A model is ``embed -> blocks -> final norm -> lm_head``; a block is ``h + mixer(norm(h))`` followed,
where the family has one, by ``h + mlp(norm(h))``. Only the token mixer (selective scan, SSD or attention)
moves information between positions, so it is the only place a knockout acts.

Every mixer can be written as a *hidden attention*: ``mixed[t, f] = sum_s matrix[f, t, s] * values[s, f]
+ skip[t, f]`` for each feature f (channel of Mamba-1, head of Mamba-2 and of attention). The clean path
(``mix``) uses the family's efficient form (scan, SDPA); the knockout path (``terms``) materialises the
matrix with the blocked edges removed, only for the target positions that have a blocked edge.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from infoflow.knockout.spec import FeatureSelection, Knockout, KnockoutMode
from infoflow.models.transfer import to_device_async


@dataclass(frozen=True)
class LayerKnockout:
    """A knockout as one layer sees it (applies to every prompt of the batch)."""

    blocked: torch.Tensor  # bool [T, T]; blocked[t, s]: t may not receive from s (only s <= t set)
    mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION
    strict: bool = False
    exempt: torch.Tensor | None = None  # bool [F]; True = feature untouched by the knockout


@dataclass
class MixingTerms:
    """``mixed = matrix @ values + skip`` per feature (the hidden attention of a mixer), for R output rows
    (every position, R = T, unless the mixer was asked for some rows only)."""

    matrix: torch.Tensor  # [B, F, R, T], matrix[b, f, r, s] (zero where s is after the row's position)
    values: torch.Tensor  # [B, T, F, P], what the matrix mixes across positions
    skip: torch.Tensor  # [B, R, F, P], the per-position part no other position contributes to

    def mixed(self) -> torch.Tensor:
        """[B, R, F, P]: mixed[b, r, f, p] = sum_s matrix[b, f, r, s] values[b, s, f, p] + skip[b, r, f, p]."""
        return torch.einsum("bfrs,bsfp->brfp", self.matrix, self.values) + self.skip


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


def join_positions(prefix: Any, tail: Any, start: int, rows: TailRows) -> Any:
    """Positions ``< start`` of ``prefix`` (the clean run of P prompts, each row reading its own prompt's)
    followed by all of ``tail`` [A, T - start]."""
    return map_tensor_fields(
        tail, lambda name, value: torch.cat([rows.gather(getattr(prefix, name)[:, :start]), value], dim=1)
    )


class TokenMixer(nn.Module, ABC):
    """The token-mixing operator of one layer; ``n_features`` channels/heads mix independently."""

    n_features: int
    supports_ssm_modes: bool = False  # zero-delta and strict apply to state-space mixers only

    @abstractmethod
    def prepare(self, hidden: torch.Tensor) -> Any:
        """Per-position projections of the normed input ``hidden`` [B, T, D] (a dataclass of tensors)."""

    @abstractmethod
    def mix(self, prepared: Any) -> torch.Tensor:
        """Clean mixing with the family's efficient algorithm: [B, T, F, P]."""

    @abstractmethod
    def terms(
        self,
        prepared: Any,
        blocked: torch.Tensor | None = None,
        mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION,
        strict: bool = False,
        rows: torch.Tensor | None = None,
    ) -> MixingTerms:
        """Materialised hidden attention with ``blocked`` [B, T, T] edges removed, for output positions
        ``rows`` [R] (default: all).

        ``zero-delta`` and ``strict`` change the sources themselves: they remove the union of the entry's
        blocked sources from the whole entry, so entries should then block edges of a single target row.
        """

    def prepare_tail(self, hidden_tail: torch.Tensor, prefix: Any, start: int, rows: TailRows) -> Any:
        """Prepared inputs [A, T - start, ...] at positions ``start..T-1`` of A tail rows, variants of the
        prompts whose clean run is ``prefix`` (row a of prompt ``rows.prompt[a]``): ``hidden_tail``
        [A, T - start, D] are their normed inputs there, and positions before ``start`` are the clean ones
        (join them with :func:`join_positions`).

        The default suits per-position projections; families whose projections look back (a conv1d) or
        depend on the absolute position (rotary) override it.
        """
        return self.prepare(hidden_tail)

    def mix_last_row(self, prefix: Any, tail: Any, blocked_row: torch.Tensor, rows: TailRows) -> torch.Tensor:
        """Mixed features [A, F, P] at the last position for A variants whose only new position is the last:
        ``prefix`` is the clean run (P prompts, T positions), ``tail`` the variants' prepared last position
        [A, 1, ...], ``blocked_row`` [A, T] the sources each variant blocks for it (zero-attention)."""
        seq_len = blocked_row.shape[-1]
        blocked = torch.zeros(len(blocked_row), seq_len, seq_len, dtype=torch.bool, device=blocked_row.device)
        blocked[:, -1] = blocked_row
        last = torch.arange(seq_len - 1, seq_len, device=blocked_row.device)
        return self.terms(join_positions(prefix, tail, seq_len - 1, rows), blocked, rows=last).mixed()[:, 0]

    @abstractmethod
    def project(self, mixed: torch.Tensor, prepared: Any) -> torch.Tensor:
        """Gate / norm / output projection of the mixed features: [B, T, F, P] -> [B, T, D]."""

    def decay_norms(self) -> torch.Tensor | None:
        """Per-feature ``sum_n exp(-exp(A_log))`` [F] for state-space mixers, None for attention."""
        return None

    def forward(self, hidden: torch.Tensor, knockout: LayerKnockout | None = None) -> torch.Tensor:
        prepared = self.prepare(hidden)
        mixed = self.mix(prepared)
        if knockout is not None:
            mixed = self.knock_out_rows(prepared, mixed, knockout)
        return self.project(mixed, prepared)

    def hidden_attention(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, F, T, T]: the mixing matrix of every feature for the normed layer input ``hidden``."""
        return self.terms(self.prepare(hidden)).matrix

    def check_mode(self, mode: KnockoutMode, strict: bool) -> None:
        if self.supports_ssm_modes:
            return
        if mode is not KnockoutMode.ZERO_ATTENTION or strict:
            raise ValueError(
                f"knockout mode {mode.value!r}{' (strict)' if strict else ''} applies to "
                "Mamba models only; attention models block edges by setting their logits to -inf"
            )

    def knock_out_rows(self, prepared: Any, mixed: torch.Tensor, knockout: LayerKnockout) -> torch.Tensor:
        """Replace the rows of ``mixed`` [B, T, F, P] that have a blocked edge by their knocked-out values.

        Rows without a blocked edge keep their clean values bit for bit. Each target row r gets its own
        copy of the inputs in which only row r's edges are blocked (so zero-delta and strict, which change
        the sources themselves, affect row r alone).
        """
        blocked = knockout.blocked
        rows = blocked.any(dim=-1).nonzero().squeeze(-1)  # [R] target positions
        if rows.numel() == 0:
            return mixed
        batch, n_rows = mixed.shape[0], rows.numel()
        single_row = torch.zeros(n_rows, *blocked.shape, dtype=torch.bool, device=blocked.device)
        single_row[torch.arange(n_rows), rows] = blocked[rows]  # [R, T, T]
        copies = repeat_batch(prepared, n_rows)  # [B*R, ...], prompt-major
        knocked = self.terms(copies, single_row.repeat(batch, 1, 1), knockout.mode, knockout.strict).mixed()
        knocked = knocked.unflatten(0, (batch, n_rows))[:, torch.arange(n_rows), rows]  # [B, R, F, P]
        if knockout.exempt is not None:
            exempt = knockout.exempt.view(1, 1, -1, 1)
            knocked = torch.where(exempt, mixed[:, rows], knocked)
        mixed = mixed.clone()
        mixed[:, rows] = knocked.to(mixed.dtype)
        return mixed


class RMSNorm(nn.Module):
    """``w * x / sqrt(mean(x^2) + eps)``, computed in fp32 like transformers' Llama/Mamba norms."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class Block(nn.Module):
    """``h = h + mixer(mixer_norm(h))`` then, if present, ``h = h + mlp(mlp_norm(h))``."""

    def __init__(
        self,
        mixer_norm: nn.Module,
        mixer: TokenMixer,
        mlp_norm: nn.Module | None = None,
        mlp: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.mixer_norm = mixer_norm
        self.mixer = mixer
        self.mlp_norm = mlp_norm
        self.mlp = mlp

    def forward(self, hidden: torch.Tensor, knockout: LayerKnockout | None = None) -> torch.Tensor:
        return self.add_mlp(hidden + self.mixer(self.mixer_norm(hidden), knockout))

    def add_mlp(self, hidden: torch.Tensor) -> torch.Tensor:
        """The part of the block after the mixer's residual add (positions do not interact)."""
        if self.mlp is None:
            return hidden
        assert self.mlp_norm is not None
        return hidden + self.mlp(self.mlp_norm(hidden))


class CausalLM(nn.Module):
    """A causal language model made of :class:`Block`s, run with or without a knockout.

    ``family`` names the architecture family (``mamba1``, ``falcon_mamba``, ``mamba2``, ``gpt2``,
    ``llama``); ``embed`` maps token ids [B, T] to the residual stream [B, T, D] (with position
    embeddings where the family has them).
    """

    def __init__(
        self,
        family: str,
        embed: nn.Module,
        blocks: list[Block],
        final_norm: nn.Module,
        lm_head: nn.Linear,
        max_positions: int | None = None,
        token_embedding_key: str = "embed.weight",
    ) -> None:
        super().__init__()
        self.family = family
        self.token_embedding_key = token_embedding_key  # the weight a tied lm_head shares
        self.embed = embed
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = final_norm
        self.lm_head = lm_head
        self.max_positions = max_positions

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def is_ssm(self) -> bool:
        return self.mixer(0).supports_ssm_modes

    def mixer(self, layer: int) -> TokenMixer:
        mixer = self.blocks[layer].mixer
        assert isinstance(mixer, TokenMixer)
        return mixer

    def exempt_features(self, layer: int, selection: FeatureSelection) -> torch.Tensor | None:
        """Bool [F] of the features a knockout leaves untouched in ``layer`` (None: none exempt)."""
        return selection.exempt_mask(self.mixer(layer).decay_norms())

    def check_knockout(self, knockout: Knockout) -> None:
        """Errors for layers this model lacks and for Mamba-only modes on attention layers."""
        n_layers = self.n_layers
        bad_layers = [layer for layer in knockout.layers if layer >= n_layers]
        if bad_layers:
            raise ValueError(f"layers {bad_layers} do not exist in a model with {n_layers} layers")
        if knockout.mode is not KnockoutMode.ZERO_ATTENTION or knockout.strict:
            for layer in knockout.layers:
                self.mixer(layer).check_mode(knockout.mode, knockout.strict)

    def layer_knockouts(self, knockout: Knockout | None, seq_len: int) -> dict[int, LayerKnockout]:
        """The knockout as each layer sees it; validated against this model and prompt length."""
        if knockout is None:
            return {}
        self.check_knockout(knockout)
        blocked = knockout.blocked_matrix(seq_len, device=self.lm_head.weight.device)
        return {
            layer: LayerKnockout(
                blocked=blocked,
                mode=knockout.mode,
                strict=knockout.strict,
                exempt=self.exempt_features(layer, knockout.features),
            )
            for layer in knockout.layers
        }

    def check_length(self, seq_len: int) -> None:
        if self.max_positions is not None and seq_len > self.max_positions:
            raise ValueError(
                f"prompt has {seq_len} tokens but the model supports at most {self.max_positions} positions"
            )

    def forward(self, input_ids: torch.Tensor, knockout: Knockout | None = None) -> torch.Tensor:
        """Logits [B, T, V] for token ids [B, T], with ``knockout`` applied to every prompt of the batch."""
        return self.lm_head(self.final_norm(self.residual_stream(input_ids, knockout)[-1]))

    def residual_stream(self, input_ids: torch.Tensor, knockout: Knockout | None = None) -> list[torch.Tensor]:
        """``n_layers + 1`` tensors [B, T, D]: the residual stream entering each layer, then the last output."""
        self.check_length(input_ids.shape[1])
        per_layer = self.layer_knockouts(knockout, input_ids.shape[1])
        stream = [self.embed(input_ids)]
        for index, block in enumerate(self.blocks):
            stream.append(block(stream[-1], per_layer.get(index)))
        return stream

    def hidden_attention(self, input_ids: torch.Tensor, layer: int) -> torch.Tensor:
        """[B, F, T, T]: the mixing matrix of ``layer`` on the clean run of ``input_ids``."""
        block = self.blocks[layer]
        return self.mixer(layer).hidden_attention(block.mixer_norm(self.residual_stream(input_ids)[layer]))
