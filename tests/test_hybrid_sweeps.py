"""Hybrid sweeps (``--mixers``): a knockout restricted to the attention or the recurrent mixers equals the knockout
of only those layers of each window, on both engines; models without the mixers asked for are refused up front."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from infoflow.data.spans import TokenSpans
from infoflow.engines.fast import FastEngine
from infoflow.engines.reference import ReferenceEngine
from infoflow.experiments.heatmap import heatmap_plan
from infoflow.experiments.info_flow import InfoFlowParams, info_flow_manifest_params, info_flow_plan
from infoflow.experiments.plans import KnockoutOptions
from infoflow.interventions.knockout import FeatureCategory, FeatureSelection, Knockout
from infoflow.interventions.mixers import Mixers, is_hybrid
from infoflow.models.modes import MixerKind

SPANS = TokenSpans(input_ids=(3, 14, 15, 9, 26, 5, 35, 7, 11), subject=range(2, 4), target_id=5)
IDS = torch.tensor(SPANS.input_ids)
# hybrids whose layers are each of one kind: every recurrence (SSD, selective scan, gated delta, RG-LRU), MoE and
# MLP-only layers (nemotron_h), shared blocks (zamba2)
SEQUENTIAL = ("bamba", "jamba", "nemotron_h", "qwen3_next", "recurrent_gemma", "zamba2")


def sweep(group: str, categories=(FeatureCategory.ALL,)) -> InfoFlowParams:
    return InfoFlowParams(
        feature_categories=categories, window_sizes=(2,), options=KnockoutOptions(mixers=Mixers(group))
    )


def planned(model, params: InfoFlowParams) -> list[Knockout]:
    params.check_model(model)
    return [k.knockout for k in info_flow_plan(SPANS, model.n_layers, params, params.options.mixer_kinds(model))]


def only_layers_of(model, knockouts: list[Knockout], kinds: frozenset[MixerKind]) -> list[Knockout]:
    """The same knockouts, unrestricted, in the layers of ``kinds`` only (decay categories kept)."""
    keep = {layer for layer, kind in enumerate(model.layer_kinds) if kind in kinds}
    return [
        dataclasses.replace(
            k,
            layers=tuple(layer for layer in k.layers if layer in keep),
            features=FeatureSelection(k.features.category, k.features.exempt_fraction),
        )
        for k in knockouts
    ]


@pytest.mark.parametrize("name", SEQUENTIAL)
@pytest.mark.parametrize("group", ["attention", "recurrent"])
def test_restriction_equals_knocking_out_only_those_layers(tiny_model_factory, name: str, group: str) -> None:
    model = tiny_model_factory(name)
    categories = tuple(FeatureCategory) if group == "recurrent" else (FeatureCategory.ALL,)
    params = sweep(group, categories)
    kinds = params.options.mixer_kinds(model)
    assert kinds and all(kind.is_recurrent == (group == "recurrent") for kind in kinds)
    knockouts = planned(model, params)
    expected = ReferenceEngine(model).probabilities(IDS, [None, *only_layers_of(model, knockouts, kinds)])
    reference = ReferenceEngine(model).probabilities(IDS, [None, *knockouts])
    fast = FastEngine(model, max_batch=5).probabilities(IDS, [None, *knockouts])
    assert torch.equal(reference, expected)  # the other layers' rows keep their clean values bit for bit
    assert (fast - expected).abs().max().item() <= 1e-5
    assert (expected[1:] - expected[0]).abs().max().item() > 1e-4  # the restricted knockouts do something
    everything = planned(model, sweep("all", categories))
    assert not torch.allclose(ReferenceEngine(model).probabilities(IDS, everything), reference[1:])


def test_parallel_hybrid_restricts_the_branch(tiny_model_factory) -> None:
    """Falcon-H1 (both branches in every layer): attention and recurrent each knock out one branch, on both
    engines; each moves p, and neither equals the knockout of both branches."""
    model = tiny_model_factory("falcon_h1")
    assert sweep("attention").options.mixer_kinds(model) == {MixerKind.ATTENTION}
    assert sweep("ssm").options.mixer_kinds(model) == {MixerKind.SSD}
    results = {}
    for group in ("all", "attention", "recurrent"):
        knockouts = [None, *planned(model, sweep(group))]
        results[group] = ReferenceEngine(model).probabilities(IDS, knockouts)
        fast = FastEngine(model, max_batch=4).probabilities(IDS, knockouts)
        assert (fast - results[group]).abs().max().item() <= 1e-5
        assert (results[group][1:] - results[group][0]).abs().max().item() > 1e-4
    assert not torch.allclose(results["attention"], results["all"])
    assert not torch.allclose(results["recurrent"], results["all"])


def test_heatmap_restriction(tiny_model_factory) -> None:
    model = tiny_model_factory("bamba")
    options = KnockoutOptions(mixers=Mixers("attention"))
    kinds = options.mixer_kinds(model)
    knockouts = [k.knockout for k in heatmap_plan(SPANS, model.n_layers, 2, options, kinds)]
    assert all(k.features.kinds == {MixerKind.ATTENTION} for k in knockouts)
    expected = ReferenceEngine(model).probabilities(IDS, only_layers_of(model, knockouts, kinds))
    fast = FastEngine(model, max_batch=5).probabilities(IDS, knockouts)
    assert (fast - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("mamba", sweep("attention"), r"--mixers attention: this mamba1 model \(4 selective_scan layers\) has no "
         r"attention layers; use --mixers all or one of recurrent, selective_scan"),
        ("gpt2", sweep("ssm"), "this gpt2 model .* has no recurrent layers; use --mixers all or one of attention$"),
        ("lfm2", sweep("recurrent"), "has no recurrent layers; use --mixers all or one of attention, short_conv"),
        ("bamba", sweep("gated_delta,ssd"), "this bamba model .* has no gated_delta layers"),
        ("bamba", sweep("attention", (FeatureCategory.FAST_DECAY,)), "ranks the features of recurrent layers"),
    ],
)  # fmt: skip
def test_mixers_a_model_lacks_are_refused_up_front(tiny_model_factory, name, params, message) -> None:
    with pytest.raises(ValueError, match=message):
        params.check_model(tiny_model_factory(name))


def test_mixers_values() -> None:
    assert Mixers("SSM").value == "recurrent" and Mixers(" attention ").value == "attention"
    assert Mixers("ssd, gated_delta").value == "gated_delta,ssd"
    assert not Mixers().restricts and Mixers("attention").restricts
    assert Mixers("recurrent").label == "through the recurrence" and Mixers("all").label == "all layers"
    for bad in ("mamba", "", "none", "ssd,bogus"):
        with pytest.raises(ValueError, match=r"unknown --mixers value .*accepted: all, attention, recurrent"):
            Mixers(bad)


def test_hybrids_are_told_apart(tiny_model_factory) -> None:
    assert is_hybrid(tiny_model_factory("bamba")) and is_hybrid(tiny_model_factory("falcon_h1"))
    assert not is_hybrid(tiny_model_factory("mamba")) and not is_hybrid(tiny_model_factory("lfm2"))


def test_mixers_are_part_of_a_runs_identity() -> None:
    """A restricted sweep records its mixers; a sweep of every layer keeps the parameters it had before the option
    (so that its runs still resume)."""
    default = info_flow_manifest_params(InfoFlowParams())
    assert "mixers" not in default
    assert info_flow_manifest_params(sweep("ssm")) == {**info_flow_manifest_params(sweep("all")), "mixers": "recurrent"}
