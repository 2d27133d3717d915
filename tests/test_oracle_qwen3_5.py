"""Qwen3.5 (dense, MoE, and the language model of a multimodal checkpoint): our forward pass equals
transformers' on random-weight models, past the delta rule's chunk; the hidden attention reproduces each mixer."""

import pytest
import torch
from transformers import (
    Qwen3_5Config,
    Qwen3_5ForCausalLM,
    Qwen3_5ForConditionalGeneration,
    Qwen3_5MoeForCausalLM,
    Qwen3_5MoeTextConfig,
    Qwen3_5TextConfig,
)

from infoflow.models.modes import MixerKind
from tests.oracle import (
    GATED_DELTA_SIZES,
    max_logit_difference,
    mixer_reconstruction_error,
    randomize_one_plus_norms_,
    save_and_load,
)

VOCAB = GATED_DELTA_SIZES["vocab_size"]
TEXT = dict(
    GATED_DELTA_SIZES,
    head_dim=8,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
)
MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=24)
VISION = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32, patch_size=4)

MODELS = {
    "dense": lambda: Qwen3_5ForCausalLM(Qwen3_5TextConfig(**TEXT)),
    "moe": lambda: Qwen3_5MoeForCausalLM(Qwen3_5MoeTextConfig(**TEXT, **MOE)),
    "multimodal": lambda: Qwen3_5ForConditionalGeneration(Qwen3_5Config(text_config=TEXT, vision_config=VISION)),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def pair(request, tmp_path_factory):
    theirs = randomize_one_plus_norms_(MODELS[request.param](), seed=4)
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp(request.param))


def prompt(seq_len: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, seq_len), generator=torch.Generator().manual_seed(seed))


def test_layout(pair):
    _, ours = pair
    assert ours.family == "qwen3_5"
    assert ours.layer_kinds == (MixerKind.GATED_DELTA,) * 3 + (MixerKind.ATTENTION,)


@pytest.mark.parametrize("seq_len", [1, 6, 70])  # 70: past transformers' chunk of 64
def test_logits_equal_transformers(pair, seq_len):
    theirs, ours = pair
    assert max_logit_difference(theirs, ours, prompt(seq_len, seed=seq_len)) <= 1e-4


def test_hidden_attention_reproduces_mixer(pair):
    _, ours = pair
    assert mixer_reconstruction_error(ours, prompt(9, seed=3)) <= 1e-5
