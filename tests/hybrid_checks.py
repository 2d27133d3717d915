"""Checks shared by the hybrid families' oracle tests (Mamba layers and attention layers in one model), and
:class:`HybridOracleSuite`, the oracle tests every such family runs: a family's test module subclasses it in a
``Test...`` class and gives it a ``pair`` fixture (transformers' random-weight model, ours loaded from its
``save_pretrained`` folder)."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
from transformers import PreTrainedModel

from infoflow.engines.fast import FastEngine
from infoflow.engines.reference import ReferenceEngine
from infoflow.interventions.knockout import FeatureCategory, FeatureSelection, Knockout, KnockoutMode
from infoflow.interventions.layer_knockout import LayerKnockout, exempt_features, layer_knockouts
from infoflow.models.base import CausalLM
from infoflow.models.modes import MixerKind
from infoflow.models.registry import find_model
from tests.attention_checks import (
    assert_blocked_row_gives_zero_attention_output,
    assert_knockout_is_causal,
    manual_knocked_attention,
)
from tests.oracle import OracleSuite, Pair, prompt

SEQ_LEN = 10
EDGES = ((9, 2), (9, 5), (9, 8), (6, 1), (6, 6), (4, 0))
Rotate = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class HybridOracleSuite(OracleSuite, ABC):
    """The oracle tests of :class:`OracleSuite` and the hybrids' own. ``attention_layer``: one of our attention
    layers (its fully blocked row is checked); ``aliases``: registry names that must load this family."""

    attention_layer: ClassVar[int]
    aliases: ClassVar[tuple[str, ...]]

    @abstractmethod
    def their_attention(self, theirs: PreTrainedModel) -> tuple[int, torch.nn.Module, Rotate | None]:
        """An attention layer of transformers' model: its index, its attention module, and its rotary as
        ``rotate(q, k)`` on heads in dim 1 (None: the layer has no position encoding)."""

    def test_attention_knockout_equals_manual_softmax(self, pair: Pair) -> None:
        """Their projections and scaling, with their rotary where the layer has one."""
        theirs, ours = pair
        layer, attention, rotate = self.their_attention(theirs)
        assert_attention_knockout_matches_manual(ours, attention, layer, rotate)

    def test_knockouts_per_kind_of_layer(self, pair: Pair) -> None:
        _, ours = pair
        assert_knockouts_per_kind_of_layer(ours, attention_layer=self.attention_layer)

    def test_registry_aliases_name_this_family(self, pair: Pair) -> None:
        _, ours = pair
        assert self.aliases and all(find_model(alias).family == ours.family for alias in self.aliases)


def logits(ours: CausalLM, input_ids: torch.Tensor, per_layer: dict[int, LayerKnockout]) -> torch.Tensor:
    with torch.no_grad():
        return ours(input_ids, per_layer)


def layers_of(ours: CausalLM, kinds: tuple[MixerKind, ...]) -> list[int]:
    return [layer for layer, kind in enumerate(ours.layer_kinds) if kind in kinds]


def assert_knockouts_per_kind_of_layer(ours: CausalLM, attention_layer: int) -> None:
    """A fully blocked row of an attention layer receives 0; knockouts stay causal; recurrent options
    (zero-delta, strict, feature categories) act in the state-space layers only; the engines agree."""
    assert_blocked_row_gives_zero_attention_output(ours, layer=attention_layer, row=4)
    assert_knockout_is_causal(ours)
    assert_recurrent_options_leave_attention_plain(ours)
    assert_feature_categories_apply_to_state_space_layers_only(ours)
    assert_fast_engine_matches_reference(ours)


def assert_fast_engine_matches_reference(ours: CausalLM) -> None:
    """fp32, on the oracle models (top-k routing, k < E): the fast engine gives the reference engine's numbers
    for targets last and middle, windows of 2 over every layer, in several modes, strictnesses and categories."""
    input_ids = prompt(ours.lm_head.out_features, SEQ_LEN, seed=24)[0]
    options = [
        {},
        {"mode": KnockoutMode.ZERO_DELTA, "strict": True, "features": FeatureSelection(FeatureCategory.SLOW_DECAY)},
        {"strict": True, "features": FeatureSelection(FeatureCategory.FAST_DECAY)},
    ]
    knockouts = [
        Knockout.between([target], [0, 3, target - 1, target], range(start, start + 2), **option)
        for option in options
        for target in (SEQ_LEN - 1, SEQ_LEN // 2)
        for start in range(ours.n_layers - 1)
    ]
    fast = FastEngine(ours, max_batch=7).probabilities(input_ids, [None, *knockouts])
    reference = ReferenceEngine(ours).probabilities(input_ids, [None, *knockouts])
    assert (fast - reference).abs().max().item() <= 1e-5


def assert_recurrent_options_leave_attention_plain(ours: CausalLM) -> None:
    """zero-delta and strict over a window of every layer: attention layers remove the edge as zero-attention
    does (logit -inf), the state-space layers as asked; and the attention layers' knockout matters."""
    input_ids = prompt(ours.lm_head.out_features, SEQ_LEN, seed=21)
    knockout = Knockout(EDGES, tuple(range(ours.n_layers)), mode=KnockoutMode.ZERO_DELTA, strict=True)
    per_layer = layer_knockouts(ours, knockout, SEQ_LEN)
    attention = layers_of(ours, (MixerKind.ATTENTION,))
    assert attention, "a hybrid under test needs an attention layer"
    plain = dict(per_layer)
    for layer in attention:
        plain[layer] = dataclasses.replace(per_layer[layer], mode=KnockoutMode.ZERO_ATTENTION, strict=False)
    assert torch.equal(logits(ours, input_ids, per_layer), logits(ours, input_ids, plain))
    without_attention = {layer: k for layer, k in per_layer.items() if layer not in attention}
    difference = logits(ours, input_ids, per_layer) - logits(ours, input_ids, without_attention)
    assert difference.abs().max().item() > 1e-4


def assert_feature_categories_apply_to_state_space_layers_only(ours: CausalLM) -> None:
    """Feature categories exempt a third of each state-space layer's features and nothing in the other layers;
    exempting every feature leaves exactly the knockout of the other layers (attention exempts nothing)."""
    slow = FeatureSelection(FeatureCategory.SLOW_DECAY)
    for layer in range(ours.n_layers):
        exempt, mixer = exempt_features(ours, layer, slow), ours.mixer(layer)
        if mixer.kind.is_recurrent:
            assert exempt is not None and exempt.sum().item() == int(mixer.n_features * slow.exempt_fraction)
        else:
            assert exempt is None
    input_ids = prompt(ours.lm_head.out_features, SEQ_LEN, seed=22)
    every_layer = tuple(range(ours.n_layers))
    everything_exempt = FeatureSelection(FeatureCategory.FAST_DECAY, exempt_fraction=1.0)
    all_exempt = Knockout(EDGES, every_layer, features=everything_exempt)
    knocked = logits(ours, input_ids, layer_knockouts(ours, all_exempt, SEQ_LEN))
    other_layers = tuple(layer for layer in every_layer if not ours.mixer(layer).kind.is_recurrent)
    expected = logits(ours, input_ids, layer_knockouts(ours, Knockout(EDGES, other_layers), SEQ_LEN))
    assert torch.equal(knocked, expected)
    assert not torch.equal(knocked, logits(ours, input_ids, {}))


def assert_attention_knockout_matches_manual(
    ours: CausalLM,
    theirs_attention: torch.nn.Module,
    layer: int,
    rotate: Rotate | None = None,
) -> None:
    """Our knocked attention layer equals transformers' projections (and rotary: ``rotate(q, k)``, heads on
    dim 1), then a plain softmax with the blocked logits removed, then their output projection."""
    input_ids = prompt(ours.lm_head.out_features, SEQ_LEN, seed=23)
    blocked = Knockout(EDGES, (layer,)).blocked_matrix(SEQ_LEN)
    with torch.no_grad():
        normed = ours.blocks[layer].mixer_norm(ours.residual_stream(input_ids)[layer])
        head_dim = theirs_attention.head_dim
        q, k, v = (
            proj(normed).unflatten(-1, (-1, head_dim)).transpose(1, 2)
            for proj in (theirs_attention.q_proj, theirs_attention.k_proj, theirs_attention.v_proj)
        )
        if rotate is not None:
            q, k = rotate(q, k)
        groups = theirs_attention.num_key_value_groups
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        expected = theirs_attention.o_proj(manual_knocked_attention(q, k, v, theirs_attention.scaling, EDGES))
        knocked = ours.mixer(layer)(normed, LayerKnockout(blocked))
    assert (knocked - expected).abs().max().item() <= 1e-5
