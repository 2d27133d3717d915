"""GPT-NeoX (Pythia): our forward pass equals transformers' on random-weight models (parallel and sequential
residual, partial rotary); attention knockout semantics (tests/attention_suite.py)."""

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from infoflow.models.gpt_neox import build, convert_state_dict
from infoflow.models.registry import PYTHIA_MATCHING_MAMBA, PYTHIA_SIZES, find_model
from tests.attention_checks import VOCAB
from tests.attention_suite import AttentionOracleSuite
from tests.oracle import randomize_, save_and_load

CASES = {
    # Pythia's layout: parallel residual, a quarter of each head rotated, biases
    "pythia": dict(num_attention_heads=2, rotary_pct=0.25, use_parallel_residual=True),
    # sequential residual (as GPT-2), half of each head rotated, no attention bias, tied embeddings
    "sequential": dict(
        num_attention_heads=4,
        rotary_pct=0.5,
        use_parallel_residual=False,
        attention_bias=False,
        tie_word_embeddings=True,
        hidden_act="gelu_new",
    ),
}


def config(**options) -> GPTNeoXConfig:
    return GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        max_position_embeddings=64,
        layer_norm_eps=1e-4,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
        **options,
    )


@pytest.fixture(params=sorted(CASES), scope="module")
def pair(request, tmp_path_factory):
    theirs = randomize_(GPTNeoXForCausalLM(config(**CASES[request.param])), seed=3)
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp(request.param)), None


class TestGPTNeoX(AttentionOracleSuite):
    family = "gpt_neox"

    def their_attention(self, theirs, layer, normed, mask):
        rotary = theirs.gpt_neox.rotary_emb(normed, torch.arange(normed.shape[1])[None])
        return theirs.gpt_neox.layers[layer].attention(normed, attention_mask=mask, position_embeddings=rotary)[0]


def test_parallel_residual_follows_the_config(pair):
    theirs, ours, _ = pair
    assert all(block.parallel == theirs.config.use_parallel_residual for block in ours.blocks)
    assert ours.mixer(0).rotary.rotary_dim == theirs.gpt_neox.layers[0].attention.rotary_ndims < ours.mixer(0).head_dim


def test_hub_names_of_older_checkpoints():
    """The hub's Pythia checkpoints call the output embedding ``embed_out`` and store mask and rotary buffers."""
    weight = torch.zeros(3, 2)
    converted = convert_state_dict(
        {
            "embed_out.weight": weight,
            "gpt_neox.layers.0.attention.bias": torch.ones(1, 1, 4, 4, dtype=torch.bool),
            "gpt_neox.layers.0.attention.masked_bias": torch.tensor(-1e9),
            "gpt_neox.layers.0.attention.rotary_emb.inv_freq": torch.ones(2),
            "gpt_neox.layers.0.attention.dense.bias": weight[0],
        }
    )
    assert converted.keys() == {"lm_head.weight", "blocks.0.mixer.dense.bias"}


def test_unsupported_configs():
    with pytest.raises(ValueError, match="hidden_act"):
        build(config(num_attention_heads=4, hidden_act="no_such_act"))
    with pytest.raises(ValueError, match="dynamic"):
        build(config(num_attention_heads=4, rope_scaling=dict(rope_type="dynamic", factor=2.0)))


def test_registry_pythia_and_its_mamba_matches():
    """Every Pythia size is listed, and each Mamba the papers compare one with is a registered alias."""
    assert [find_model(f"pythia-{size}").hub_id for size, _ in PYTHIA_SIZES] == [
        f"EleutherAI/pythia-{size}" for size in ("70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")
    ]
    for size, matched in PYTHIA_MATCHING_MAMBA.items():
        assert all(find_model(alias).family.startswith("mamba") for alias in matched)
        assert ", ".join(matched) in find_model(f"pythia-{size}").description
