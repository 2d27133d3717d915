"""Session-wide tiny random-weight models of every family, loaded through our real loader; one torch thread."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    FalconMambaConfig,
    FalconMambaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    Lfm2Config,
    Lfm2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Mamba2Config,
    Mamba2ForCausalLM,
    MambaConfig,
    MambaForCausalLM,
    OlmoHybridConfig,
    OlmoHybridForCausalLM,
    Qwen3NextConfig,
    Qwen3NextForCausalLM,
    RecurrentGemmaConfig,
    RecurrentGemmaForCausalLM,
)

from infoflow.models.base import CausalLM
from infoflow.models.modes import KnockoutMode
from tests.oracle import randomize_, save_and_load

# The models under test are small: one thread runs them fastest, and far faster when other processes share
# the CPU (threads waiting on each other made a 5-token forward take seconds instead of 0.1 s).
torch.set_num_threads(1)

TINY_VOCAB = 61

TINY_MODELS = {
    "mamba": lambda: MambaForCausalLM(
        MambaConfig(vocab_size=TINY_VOCAB, hidden_size=16, state_size=4, num_hidden_layers=4, time_step_rank=2)
    ),
    "falcon_mamba": lambda: FalconMambaForCausalLM(
        FalconMambaConfig(vocab_size=TINY_VOCAB, hidden_size=16, state_size=4, num_hidden_layers=4, time_step_rank=2)
    ),
    "mamba2": lambda: Mamba2ForCausalLM(
        Mamba2Config(
            vocab_size=TINY_VOCAB,
            hidden_size=16,
            num_heads=4,
            head_dim=8,
            state_size=8,
            n_groups=1,
            num_hidden_layers=4,
            chunk_size=4,
        )
    ),
    "gpt2": lambda: GPT2LMHeadModel(GPT2Config(vocab_size=TINY_VOCAB, n_embd=16, n_layer=4, n_head=2, n_positions=64)),
    "llama": lambda: LlamaForCausalLM(
        LlamaConfig(
            vocab_size=TINY_VOCAB,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ),
    "qwen3_next": lambda: Qwen3NextForCausalLM(
        Qwen3NextConfig(
            vocab_size=TINY_VOCAB,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            linear_key_head_dim=4,
            linear_value_head_dim=4,
            linear_num_key_heads=2,
            linear_num_value_heads=4,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=8,
            shared_expert_intermediate_size=8,
        )
    ),
    "lfm2": lambda: Lfm2ForCausalLM(
        Lfm2Config(
            vocab_size=TINY_VOCAB,
            hidden_size=16,
            intermediate_size=48,
            num_hidden_layers=4,
            num_attention_heads=2,
            num_key_value_heads=1,
            layer_types=["conv", "full_attention", "conv", "conv"],
            block_multiple_of=8,
        )
    ),
    "olmo_hybrid": lambda: OlmoHybridForCausalLM(
        OlmoHybridConfig(
            vocab_size=TINY_VOCAB,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            layer_types=["linear_attention", "full_attention", "linear_attention", "linear_attention"],
            linear_num_key_heads=2,
            linear_num_value_heads=4,
            linear_key_head_dim=4,
            linear_value_head_dim=4,
            pad_token_id=0,
            eos_token_id=1,
        )
    ),
    "recurrent_gemma": lambda: RecurrentGemmaForCausalLM(
        RecurrentGemmaConfig(
            vocab_size=TINY_VOCAB,
            hidden_size=16,
            lru_width=16,
            intermediate_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            num_key_value_heads=1,
            attention_window_size=4,
            block_types=["recurrent", "attention", "recurrent"],
            pad_token_id=0,
        )
    ),
}
SSM_FAMILIES = ("mamba", "falcon_mamba", "mamba2", "qwen3_next", "olmo_hybrid", "recurrent_gemma")


def supported_modes(model: CausalLM) -> list[KnockoutMode]:
    """The knockout modes some layer of ``model`` supports, in their declared order."""
    return [mode for mode in KnockoutMode if any(mode in model.mixer(i).knockout_modes for i in range(model.n_layers))]


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory):
    cache: dict[str, CausalLM] = {}

    def get(name: str) -> CausalLM:
        if name not in cache:
            cache[name] = save_and_load(randomize_(TINY_MODELS[name](), seed=7), tmp_path_factory.mktemp(name))
        return cache[name]

    return get


@pytest.fixture(scope="session", params=sorted(TINY_MODELS))
def tiny_model(request, tiny_model_factory) -> CausalLM:
    return tiny_model_factory(request.param)


@pytest.fixture(scope="session", params=SSM_FAMILIES)
def tiny_ssm(request, tiny_model_factory) -> CausalLM:
    return tiny_model_factory(request.param)
