"""The interface every architecture family implements: token mixers, the layer step, the model.

A model is ``embed -> blocks -> final norm -> lm_head``. A block (layer) is, by default,
``h + mixer(norm(h))`` followed, where the family has one, by ``h + mlp(norm(h))``; families choose
post-norms or a parallel MLP (see :class:`Block`). Only the token mixer (selective scan, SSD, attention)
moves information between positions, so it is where an edge knockout acts.

Every mixer can be written as a *hidden attention*: ``mixed[t, f] = sum_s matrix[f, t, s] * values[s, f]
+ skip[t, f]`` for each feature f (channel of Mamba-1, head of Mamba-2 and of attention). The clean path
(``mix``) uses the family's efficient form (scan, SDPA); the knockout path (``terms``) materialises the
matrix with the blocked edges removed, only for the target positions that have a blocked edge.

Interventions reach a layer through :class:`LayerIntervention` (what to do to the mixing of one layer);
this package holds the math only and knows no intervention type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from infoflow.models.modes import KnockoutMode, MixerKind, Site
from infoflow.models.tails import TailRows, join_positions


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


class TokenMixer(nn.Module, ABC):
    """The token-mixing operator of one layer; ``n_features`` channels/heads mix independently.

    Capabilities, declared per class: ``kind`` (what the mixer is), ``feature_name`` (what a feature is),
    ``knockout_modes`` and ``supports_strict`` (how it can remove an edge), ``decay_norms`` (features ranked
    by decay, for feature categories; None where features do not decay).
    """

    n_features: int
    kind: ClassVar[MixerKind]
    feature_name: ClassVar[str] = "head"
    knockout_modes: ClassVar[frozenset[KnockoutMode]] = frozenset({KnockoutMode.ZERO_ATTENTION})
    supports_strict: ClassVar[bool] = False  # strict: a short conv's taps from blocked sources removed too

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
        ``rows`` [R] (default: all). A mode the mixer does not support (see ``knockout_modes``) or strictness
        without ``supports_strict`` is the plain removal of the edge.

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
        """Per-feature ``sum_n exp(-exp(A_log))`` for state-space mixers, None for attention: [F], or, where
        the features are of several kinds (see ``feature_kinds``), one entry per feature of a recurrent kind."""
        return None

    def feature_kinds(self) -> tuple[tuple[MixerKind, int], ...]:
        """The kind of each feature, as ``(kind, count)`` runs in feature order: one run of ``kind`` unless the
        mixer joins several (a parallel hybrid: its attention heads, then its state-space heads)."""
        return ((self.kind, self.n_features),)

    def mixing(self, prepared: Any, intervention: LayerIntervention | None = None) -> torch.Tensor:
        """The mixed features [B, T, F, P], changed by ``intervention`` where given."""
        mixed = self.mix(prepared)
        return mixed if intervention is None else intervention.mixing(self, prepared, mixed)

    def forward(self, hidden: torch.Tensor, intervention: LayerIntervention | None = None) -> torch.Tensor:
        prepared = self.prepare(hidden)
        return self.project(self.mixing(prepared, intervention), prepared)


class LayerIntervention(ABC):  # noqa: B024 (abstract by intent: it does nothing until a subclass overrides a step)
    """What an intervention does inside one layer's step: to the mixing, or to a :class:`Site`'s value."""

    def mixing(self, mixer: TokenMixer, prepared: Any, mixed: torch.Tensor) -> torch.Tensor:
        """The layer's mixed features [B, T, F, P] after the intervention (``mixed``: the clean ones)."""
        return mixed

    def site_value(self, site: Site, value: torch.Tensor) -> torch.Tensor:
        """The value [B, T, D] at ``site`` after the intervention (``value``: what the step computed)."""
        return value

    def mlp_cut(self, lookback: int) -> torch.Tensor | None:
        """Bool [B or 1, T, lookback] for a block whose MLP looks back (see ``Block.mlp_lookback``):
        ``cut[b, t, j]``, the MLP at t reads nothing from position t-1-j; None: it reads every position."""
        return None


def lookback_cut(blocked: torch.Tensor, lookback: int) -> torch.Tensor:
    """Bool [B, R, K] from the blocked edges [B, R, T] of the last R target rows (R = T: every row):
    ``cut[b, r, j] = blocked[b, r, t-1-j]`` with t = T - R + r (False before position 0)."""
    n_targets, seq_len = blocked.shape[-2:]
    rows = torch.arange(n_targets, device=blocked.device)
    targets = rows + seq_len - n_targets  # [R]: the positions t of the rows
    sources = targets[:, None] - 1 - torch.arange(lookback, device=blocked.device)  # [R, K]: t-1-j
    return blocked[:, rows[:, None], sources.clamp(min=0)] & (sources >= 0)


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
    """One layer step, the only one every engine runs:

        u = mixer(mixer_norm(h))                 (u = post_mixer_norm(u) where the family has one)
        h = h + u,  then h = h + m,  m = mlp(mlp_norm(h))      (m = post_mlp_norm(m) likewise)

    or, with ``parallel`` (GPT-J, GPT-NeoX), ``h = h + u + mlp(mlp_norm(h))`` on the layer's input h (the
    MLP reads ``mixer_norm(h)`` when ``mlp_norm`` is None). The step is split where engines need it:
    :meth:`mixer_inputs` (norm + projections), the mixing itself, :meth:`finish` (everything after).

    ``mlp_lookback``: how many positions before its own the MLP reads (RWKV's channel-mix token shift; 0 for
    a per-position MLP); the fast engine finishes a tail from that many clean positions before it, and such an
    MLP takes ``cut`` (see ``LayerIntervention.mlp_cut``) as its second argument. ``residual_scale``: the
    layer's output times it (RWKV halves the stream every few layers; 1 elsewhere).
    """

    mlp_lookback: ClassVar[int] = 0
    residual_scale: float = 1.0

    def __init__(
        self,
        mixer_norm: nn.Module,
        mixer: TokenMixer,
        mlp_norm: nn.Module | None = None,
        mlp: nn.Module | None = None,
        *,
        post_mixer_norm: nn.Module | None = None,
        post_mlp_norm: nn.Module | None = None,
        parallel: bool = False,
    ) -> None:
        super().__init__()
        self.mixer_norm = mixer_norm
        self.mixer = mixer
        self.mlp_norm = mlp_norm
        self.mlp = mlp
        self.post_mixer_norm = post_mixer_norm
        self.post_mlp_norm = post_mlp_norm
        self.parallel = parallel

    def mixer_inputs(self, hidden: torch.Tensor) -> Any:
        """The mixer's prepared inputs for the layer input ``hidden`` [B, T, D]."""
        return self.mixer.prepare(self.mixer_norm(hidden))

    def tail_inputs(self, hidden_tail: torch.Tensor, prefix: Any, start: int, rows: TailRows) -> Any:
        """``mixer_inputs`` of tail rows at positions ``start..T-1`` (see ``TokenMixer.prepare_tail``)."""
        return self.mixer.prepare_tail(self.mixer_norm(hidden_tail), prefix, start, rows)

    def finish(
        self,
        hidden: torch.Tensor,
        mixed: torch.Tensor,
        prepared: Any,
        intervention: LayerIntervention | None = None,
        cut: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The layer's output [B, T, D] from its input ``hidden`` and the mixed features [B, T, F, P]; the
        values at each :class:`Site` pass through ``intervention`` where given; ``cut`` [B, T, K]: what an MLP
        that looks back may not read (see ``LayerIntervention.mlp_cut``)."""
        update = self.mixer.project(mixed, prepared)
        if self.post_mixer_norm is not None:
            update = self.post_mixer_norm(update)
        update = site_value(intervention, Site.MIXER, update)
        if self.parallel:
            output = hidden + update + self.mlp_update(hidden, self.mlp_norm or self.mixer_norm, intervention, cut)
        elif self.mlp is None:
            output = hidden + update
        else:
            assert self.mlp_norm is not None
            hidden = hidden + update
            output = hidden + self.mlp_update(hidden, self.mlp_norm, intervention, cut)
        if self.residual_scale != 1.0:
            output = output * self.residual_scale
        return site_value(intervention, Site.RESIDUAL, output)

    def mlp_update(
        self,
        hidden: torch.Tensor,
        norm: nn.Module,
        intervention: LayerIntervention | None = None,
        cut: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert self.mlp is not None
        update = self.mlp(norm(hidden)) if cut is None else self.mlp(norm(hidden), cut)
        update = update if self.post_mlp_norm is None else self.post_mlp_norm(update)
        return site_value(intervention, Site.MLP, update)

    def forward(self, hidden: torch.Tensor, intervention: LayerIntervention | None = None) -> torch.Tensor:
        prepared = self.mixer_inputs(hidden)
        cut = intervention.mlp_cut(self.mlp_lookback) if intervention is not None and self.mlp_lookback else None
        return self.finish(hidden, self.mixer.mixing(prepared, intervention), prepared, intervention, cut)


def site_value(intervention: LayerIntervention | None, site: Site, value: torch.Tensor) -> torch.Tensor:
    """``value`` [B, T, D] at ``site`` after ``intervention`` (unchanged without one)."""
    return value if intervention is None else intervention.site_value(site, value)


class CausalLM(nn.Module):
    """A causal language model made of :class:`Block`s, run clean or with per-layer interventions.

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

    def block(self, layer: int) -> Block:
        block = self.blocks[layer]
        assert isinstance(block, Block)
        return block

    def mixer(self, layer: int) -> TokenMixer:
        return self.block(layer).mixer

    @property
    def layer_kinds(self) -> tuple[MixerKind, ...]:
        """The kind of each layer's token mixer."""
        return tuple(self.mixer(layer).kind for layer in range(self.n_layers))

    @property
    def has_decay_features(self) -> bool:
        """Some layer ranks its features by decay (so feature categories apply to it)."""
        return any(self.mixer(layer).decay_norms() is not None for layer in range(self.n_layers))

    def check_length(self, seq_len: int) -> None:
        if self.max_positions is not None and seq_len > self.max_positions:
            raise ValueError(
                f"prompt has {seq_len} tokens but the model supports at most {self.max_positions} positions"
            )

    def forward(
        self, input_ids: torch.Tensor, interventions: dict[int, LayerIntervention] | None = None
    ) -> torch.Tensor:
        """Logits [B, T, V] for token ids [B, T], with ``interventions`` (layer -> what it does there)."""
        return self.unembed(self.residual_stream(input_ids, interventions)[-1])

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [..., V] of residual-stream vectors [..., D]: ``lm_head(final_norm(hidden))``."""
        return self.lm_head(self.final_norm(hidden))

    def residual_stream(
        self, input_ids: torch.Tensor, interventions: dict[int, LayerIntervention] | None = None
    ) -> list[torch.Tensor]:
        """``n_layers + 1`` tensors [B, T, D]: the residual stream entering each layer, then the last output."""
        self.check_length(input_ids.shape[1])
        return self.stream_from(self.embed(input_ids), interventions)

    def stream_from(
        self, embedded: torch.Tensor, interventions: dict[int, LayerIntervention] | None = None
    ) -> list[torch.Tensor]:
        """``residual_stream`` from the embeddings [B, T, D] (e.g. the corrupted ones of causal tracing)."""
        interventions = interventions or {}
        stream = [embedded]
        for layer in range(self.n_layers):
            stream.append(self.block(layer)(stream[-1], interventions.get(layer)))
        return stream

    def hidden_attention(self, input_ids: torch.Tensor, layer: int) -> torch.Tensor:
        """[B, F, T, T]: the mixing matrix of ``layer`` on the clean run of ``input_ids``."""
        prepared = self.block(layer).mixer_inputs(self.residual_stream(input_ids)[layer])
        return self.mixer(layer).terms(prepared).matrix
