"""Zamba2: our forward pass equals transformers' on random-weight models; shared blocks share one set of weights;
every mixer's hidden attention reproduces it; knocking out the shared attention equals transformers' attention
under a mask."""

import pytest
import torch
from transformers import Zamba2Config, Zamba2ForCausalLM

from infoflow.interventions.knockout import FeatureSelection, Knockout
from infoflow.models.mamba2 import Mamba2Mixer
from infoflow.models.modes import MixerKind
from infoflow.models.zamba2 import build
from tests.oracle import (
    OracleSuite,
    assert_half_precision_engines_agree,
    assert_kind_restricted_engines_agree,
    knocked_logits,
    randomize_,
    save_and_load,
)
from tests.oracle import prompt as random_prompt

VOCAB = 97
CHUNK = 8  # prompts of 17 and 20 tokens take the multi-chunk path with padding
# name -> options: shared blocks, per-site attention adapters (they need as many kv heads as heads), RoPE, layers
VARIANTS = {
    "one_block_gqa": dict(
        num_mem_blocks=1,
        use_shared_attention_adapter=False,
        use_mem_rope=False,
        num_key_value_heads=2,
        layers_block_type=["hybrid", "mamba", "hybrid"],
    ),
    "two_blocks_adapters_rope": dict(
        num_mem_blocks=2,
        use_shared_attention_adapter=True,
        use_mem_rope=True,
        num_key_value_heads=4,
        add_bias_linear=True,
        layers_block_type=["mamba", "hybrid", "hybrid", "mamba", "hybrid"],
    ),
}


def zamba2_config(options: dict) -> Zamba2Config:
    return Zamba2Config(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=len(options["layers_block_type"]),
        mamba_d_state=8,
        n_mamba_heads=4,
        mamba_ngroups=2,
        num_attention_heads=4,
        adapter_rank=4,
        chunk_size=CHUNK,
        attn_implementation="eager",
        **options,
    )


@pytest.fixture(params=sorted(VARIANTS), scope="module")
def pair(request, tmp_path_factory):
    theirs = randomize_(Zamba2ForCausalLM(zamba2_config(dict(VARIANTS[request.param]))), seed=2)
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp(request.param))


def prompt(seq_len: int, seed: int = 0) -> torch.Tensor:
    return random_prompt(VOCAB, seq_len, seed)


def call_sites(ours) -> list[int]:
    """Our layers that are shared-block call sites (attention)."""
    return [layer for layer, kind in enumerate(ours.layer_kinds) if kind is MixerKind.ATTENTION]


class TestZamba2(OracleSuite):
    vocab = VOCAB


def test_each_hybrid_layer_is_a_call_site_then_a_mamba_layer(pair):
    theirs, ours = pair
    expected = []
    for layer_type in theirs.config.layers_block_type:
        expected += [MixerKind.ATTENTION, MixerKind.SSD] if layer_type == "hybrid" else [MixerKind.SSD]
    assert list(ours.layer_kinds) == expected


def test_shared_blocks_are_one_set_of_weights(pair):
    """Call sites of one shared block hold the same modules; each site has its own adapters and projection,
    equal to transformers'; the model holds as many distinct weights as transformers'."""
    theirs, ours = pair
    sites, blocks = call_sites(ours), theirs.config.num_mem_blocks
    hybrid_layers = [theirs.model.layers[i] for i in theirs.config.hybrid_layer_ids]
    for k, layer in enumerate(sites):
        first = ours.block(sites[k % blocks])
        block = ours.block(layer)
        assert block.mixer.shared is first.mixer.shared and block.mlp.shared is first.mlp.shared
        assert block.mixer_norm is first.mixer_norm and block.mlp_norm is first.mlp_norm
        their_mlp = hybrid_layers[k].shared_transformer.feed_forward
        assert torch.equal(block.mlp.adapter[0].weight, their_mlp.gate_up_proj_adapter_list[k][0].weight)
        assert torch.equal(block.mlp.linear.weight, hybrid_layers[k].linear.weight)
        if block.mixer.adapters is not None:
            their_adapter = hybrid_layers[k].shared_transformer.self_attn.linear_k_adapter_list[k]
            assert torch.equal(block.mixer.adapters["k"][1].weight, their_adapter[1].weight)
    storages = {p.data_ptr(): p.numel() for p in ours.state_dict().values()}
    assert sum(storages.values()) == sum(p.numel() for p in theirs.parameters())


def test_call_sites_attend_as_transformers(pair):
    theirs, ours = pair
    input_ids = prompt(9, seed=4)
    with torch.no_grad():
        expected = theirs(input_ids, output_attentions=True).attentions  # one [B, H, T, T] per call site
        for site, layer in enumerate(call_sites(ours)):
            assert (ours.hidden_attention(input_ids, layer) - expected[site]).abs().max().item() <= 1e-5


def test_stream_carries_the_embeddings_and_clears_the_transformer_slot(pair):
    _, ours = pair
    input_ids = prompt(6, seed=6)
    with torch.no_grad():
        stream = ours.residual_stream(input_ids)
        embedded = ours.embed.weight[input_ids]
    for layer, hidden in enumerate(stream):
        _, e, t = hidden.chunk(3, dim=-1)
        assert torch.equal(e, embedded)
        after_site = layer > 0 and ours.layer_kinds[layer - 1] is MixerKind.ATTENTION
        assert t.abs().max().item() > 0 if after_site else torch.equal(t, torch.zeros_like(t))


def test_knockout_at_every_call_site_equals_transformers_with_masked_attention(pair):
    """Blocking edges in every call site's attention (and nowhere else) is transformers' forward with those
    logits masked; restricting an all-layer knockout to attention is the same knockout."""
    theirs, ours = pair
    edges = ((6, 2), (6, 4), (4, 1), (3, 3))
    input_ids = prompt(7, seed=5)
    mask = torch.full((7, 7), torch.finfo(torch.float32).min).triu(1)
    for t, s in edges:
        mask[t, s] = torch.finfo(torch.float32).min
    with torch.no_grad():
        expected = theirs(input_ids, attention_mask={"full_attention": mask[None, None], "linear_attention": None})
        at_sites = knocked_logits(ours, input_ids, Knockout(edges, tuple(call_sites(ours))))
        features = FeatureSelection(kinds={MixerKind.ATTENTION})
        restricted = knocked_logits(ours, input_ids, Knockout(edges, tuple(range(ours.n_layers)), features=features))
    assert (at_sites - expected.logits).abs().max().item() <= 1e-4
    assert torch.equal(restricted, at_sites)
    assert (at_sites - ours(input_ids)).abs().max().item() > 1e-3


@pytest.mark.parametrize("mode", sorted(Mamba2Mixer.knockout_modes))
def test_restriction_to_mamba_equals_the_knockout_of_the_mamba_layers(pair, mode):
    _, ours = pair
    input_ids = prompt(8, seed=7)
    window = range(1, 4)
    mamba_layers = [layer for layer in window if ours.layer_kinds[layer] is MixerKind.SSD]
    only_mamba = Knockout.between([7], [1, 2], window, mode=mode, features=FeatureSelection(kinds={MixerKind.SSD}))
    with torch.no_grad():
        restricted = knocked_logits(ours, input_ids, only_mamba)
        expected = knocked_logits(ours, input_ids, Knockout.between([7], [1, 2], mamba_layers, mode=mode))
    assert torch.equal(restricted, expected)


def test_fast_engine_matches_reference_with_kind_restrictions(tiny_model_factory):
    assert_kind_restricted_engines_agree(tiny_model_factory("zamba2"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_both_engines(tiny_model_factory, dtype):
    assert_half_precision_engines_agree(tiny_model_factory("zamba2"), dtype)


def test_attention_adapters_with_grouped_kv_heads_are_refused():
    options = dict(VARIANTS["two_blocks_adapters_rope"], num_key_value_heads=2)
    with pytest.raises(ValueError, match="num_key_value_heads == num_attention_heads"):
        build(zamba2_config(options))
