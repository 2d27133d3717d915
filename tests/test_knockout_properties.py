"""Properties every knockout must have, on random models of every family and random edge sets."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from infoflow.interventions.knockout import FeatureCategory, FeatureSelection, Knockout, KnockoutMode
from infoflow.interventions.layer_knockout import exempt_features, layer_knockouts
from tests.conftest import TINY_VOCAB, supported_modes, supports_strict

N_LAYERS = 4
PROPERTY_SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


@st.composite
def prompts_and_knockouts(draw, **knockout_options):
    """A random prompt [T] and a random knockout: any edge set (incl. s > t pairs), any layer set."""
    seq_len = draw(st.integers(2, 9))
    input_ids = torch.tensor(draw(st.lists(st.integers(0, TINY_VOCAB - 1), min_size=seq_len, max_size=seq_len)))
    positions = st.integers(0, seq_len - 1)
    edges = draw(st.lists(st.tuples(positions, positions), min_size=1, max_size=12))
    layers = draw(st.lists(st.integers(0, N_LAYERS - 1), min_size=1, max_size=N_LAYERS, unique=True))
    return input_ids, Knockout(edges=tuple(edges), layers=tuple(sorted(layers)), **knockout_options)


def logits(model, input_ids, knockout=None):
    with torch.no_grad():
        return model(input_ids.view(1, -1), layer_knockouts(model, knockout, len(input_ids)))[0]


@PROPERTY_SETTINGS
@given(case=prompts_and_knockouts())
def test_no_edges_reproduces_clean_output_exactly(tiny_model, case):
    input_ids, knockout = case
    empty = Knockout(edges=(), layers=knockout.layers)
    assert torch.equal(logits(tiny_model, input_ids, empty), logits(tiny_model, input_ids))


@PROPERTY_SETTINGS
@given(case=prompts_and_knockouts())
def test_positions_before_first_target_and_layers_before_window_unchanged(tiny_model, case):
    input_ids, knockout = case
    with torch.no_grad():
        clean = tiny_model.residual_stream(input_ids.view(1, -1))
        knocked = tiny_model.residual_stream(
            input_ids.view(1, -1), layer_knockouts(tiny_model, knockout, len(input_ids))
        )
    first_layer = min(knockout.layers)
    for layer in range(first_layer + 1):  # the stream entering the first knocked layer is still clean
        assert torch.equal(clean[layer], knocked[layer])
    first_target = knockout.first_target
    if first_target is None:
        assert torch.equal(clean[-1], knocked[-1])
    else:
        for stream_clean, stream_knocked in zip(clean, knocked, strict=True):
            assert torch.equal(stream_clean[:, :first_target], stream_knocked[:, :first_target])


@PROPERTY_SETTINGS
@given(case=prompts_and_knockouts(), replacement=st.integers(0, TINY_VOCAB - 1))
def test_knockout_stays_causal(tiny_model, case, replacement):
    """Changing the last token never changes the logits of earlier positions, knockout or not."""
    input_ids, knockout = case
    changed = input_ids.clone()
    changed[-1] = replacement
    assert torch.equal(logits(tiny_model, input_ids, knockout)[:-1], logits(tiny_model, changed, knockout)[:-1])


@PROPERTY_SETTINGS
@given(case=prompts_and_knockouts(), row=st.integers(0, 8))
def test_fully_blocked_rows_stay_finite(tiny_model, case, row):
    input_ids, knockout = case
    row = min(row, len(input_ids) - 1)
    full_row = tuple((row, s) for s in range(row + 1))
    result = logits(tiny_model, input_ids, Knockout(edges=knockout.edges + full_row, layers=knockout.layers))
    assert torch.isfinite(result).all()


@PROPERTY_SETTINGS
@given(
    case=prompts_and_knockouts(),
    mode=st.sampled_from(list(KnockoutMode)),
    strict=st.booleans(),
    category=st.sampled_from([FeatureCategory.FAST_DECAY, FeatureCategory.SLOW_DECAY]),
)
def test_exempting_every_feature_reproduces_clean_output(tiny_ssm, case, mode, strict, category):
    assume(mode in supported_modes(tiny_ssm) and (supports_strict(tiny_ssm) or not strict))
    input_ids, knockout = case
    decaying = tuple(layer for layer in knockout.layers if tiny_ssm.mixer(layer).decay_norms() is not None)
    assume(decaying)  # a hybrid's attention layers have no features to exempt
    everything_exempt = FeatureSelection(category=category, exempt_fraction=1.0)
    exempt = Knockout(knockout.edges, decaying, mode=mode, strict=strict, features=everything_exempt)
    assert torch.equal(logits(tiny_ssm, input_ids, exempt), logits(tiny_ssm, input_ids))


def test_feature_categories_knock_out_complementary_thirds(tiny_ssm):
    norms = tiny_ssm.mixer(0).decay_norms()
    fast = exempt_features(tiny_ssm, 0, FeatureSelection(FeatureCategory.FAST_DECAY))
    slow = exempt_features(tiny_ssm, 0, FeatureSelection(FeatureCategory.SLOW_DECAY))
    third = norms.numel() // 3
    assert fast.sum() == slow.sum() == third
    assert norms[fast].max() <= norms[~fast].min()  # fast-decay features exempt: the smallest norms
    assert norms[slow].min() >= norms[~slow].max()
    assert exempt_features(tiny_ssm, 0, FeatureSelection(FeatureCategory.ALL)) is None


def test_feature_categories_need_a_state_space_model(tiny_model):
    knockout = Knockout.between([3], [0, 1], [0], features=FeatureSelection(FeatureCategory.SLOW_DECAY))
    if tiny_model.has_decay_features:
        logits(tiny_model, torch.arange(5), knockout)
    else:
        with pytest.raises(ValueError, match="supported by no layer"):
            logits(tiny_model, torch.arange(5), knockout)


def test_ssm_modes_are_refused_for_attention(tiny_model):
    if tiny_model.has_decay_features:
        pytest.skip("state-space models accept every mode")
    for options in ({"mode": KnockoutMode.ZERO_DELTA}, {"strict": True}):
        with pytest.raises(ValueError, match="supported by no layer"):
            logits(tiny_model, torch.arange(5), Knockout.between([4], [1], [0], **options))


def test_isolating_the_last_token_in_every_layer(tiny_model):
    """Blocking last <- every earlier position in all layers makes the last logits independent of the
    earlier tokens, except through short-range taps (a Mamba conv1d, RWKV's token shifts), which only the
    strict mode closes."""
    input_ids = torch.tensor([5, 9, 2, 33, 17, 8])
    changed = input_ids.clone()
    changed[-2] = 40  # a source within the conv kernel's reach of the last position
    last = len(input_ids) - 1
    every_layer = range(tiny_model.n_layers)
    taps = supports_strict(tiny_model)
    for strict in (False, True) if taps else (False,):
        knockout = Knockout.between([last], range(last), every_layer, strict=strict)
        same = torch.equal(logits(tiny_model, input_ids, knockout)[-1], logits(tiny_model, changed, knockout)[-1])
        assert same == (strict or not taps)
