"""Session-wide tiny random-weight models of every family, loaded through our real loader; one torch thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import (
    FalconH1Config,
    FalconH1ForCausalLM,
    FalconMambaConfig,
    FalconMambaForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPTJConfig,
    GPTJForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    Lfm2Config,
    Lfm2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Mamba2Config,
    Mamba2ForCausalLM,
    MambaConfig,
    MambaForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    OlmoHybridConfig,
    OlmoHybridForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3NextConfig,
    Qwen3NextForCausalLM,
    RecurrentGemmaConfig,
    RecurrentGemmaForCausalLM,
    RwkvConfig,
    RwkvForCausalLM,
    Zamba2Config,
    Zamba2ForCausalLM,
    xLSTMConfig,
    xLSTMForCausalLM,
)

from infoflow.models.base import CausalLM
from infoflow.models.loading import load_hf_folder
from infoflow.models.modes import KnockoutMode
from tests.oracle import randomize_
from tests.tiny_hybrids import tiny_hybrids

# The models under test are small: one thread runs them fastest, and far faster when other processes share
# the CPU (threads waiting on each other made a 5-token forward take seconds instead of 0.1 s).
torch.set_num_threads(1)
os.environ.setdefault("INFOFLOW_THREADS", "1")  # and in the commands the tests run

TINY_VOCAB = 61

# what most tiny configs share: 61 tokens, width 16, an MLP of 32, 4 layers; attention heads: 4 queries, 2 keys
TINY = dict(vocab_size=TINY_VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=4)
HEADS = dict(num_attention_heads=4, num_key_value_heads=2)

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
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**TINY, **HEADS)),
    "gpt_neox": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(**TINY, num_attention_heads=2, rotary_pct=0.5)),
    "gptj": lambda: GPTJForCausalLM(GPTJConfig(vocab_size=TINY_VOCAB, n_embd=16, n_layer=4, n_head=2, rotary_dim=4)),
    "phi3": lambda: Phi3ForCausalLM(Phi3Config(**TINY, **HEADS, sliding_window=4, pad_token_id=0)),
    # sliding windows of 3 (layers 2-3 of qwen3, 0 and 2 of the Gemmas): the property tests' prompts are longer
    "qwen3": lambda: Qwen3ForCausalLM(
        Qwen3Config(**TINY, **HEADS, head_dim=4, use_sliding_window=True, sliding_window=3, max_window_layers=2)
    ),
    "olmo2": lambda: Olmo2ForCausalLM(Olmo2Config(**TINY, **HEADS, pad_token_id=0, eos_token_id=0)),
    "gemma2": lambda: Gemma2ForCausalLM(
        Gemma2Config(
            **TINY,
            **HEADS,
            head_dim=4,
            sliding_window=3,
            query_pre_attn_scalar=4,
            attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0,
        )
    ),
    "gemma3": lambda: Gemma3ForCausalLM(
        Gemma3TextConfig(
            **TINY, **HEADS, head_dim=4, sliding_window=3, sliding_window_pattern=2, query_pre_attn_scalar=4
        )
    ),
    **tiny_hybrids(TINY_VOCAB),
    # parallel hybrid: attention (2 heads of 8) and Mamba-2 (4 heads of 4) in every layer, values padded to 8
    "falcon_h1": lambda: FalconH1ForCausalLM(
        FalconH1Config(
            **TINY,
            num_attention_heads=2,
            num_key_value_heads=1,
            mamba_d_ssm=16,
            mamba_n_heads=4,
            mamba_d_head=4,
            mamba_d_state=4,
            mamba_chunk_size=4,
            mamba_rms_norm=True,
            ssm_multipliers=[0.5, 1.5, 0.75, 1.25, 0.9],
        )
    ),
    # two hybrid layers sharing one transformer block: our layers attention, Mamba-2, attention, Mamba-2
    "zamba2": lambda: Zamba2ForCausalLM(
        Zamba2Config(
            vocab_size=TINY_VOCAB,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            layers_block_type=["hybrid", "hybrid"],
            mamba_d_state=4,
            n_mamba_heads=4,
            num_attention_heads=2,
            adapter_rank=2,
            use_shared_attention_adapter=True,
            use_mem_rope=True,
            chunk_size=4,
        )
    ),
    "qwen3_next": lambda: Qwen3NextForCausalLM(
        Qwen3NextConfig(
            **TINY,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            linear_key_head_dim=4,
            linear_value_head_dim=4,
            linear_num_key_heads=2,
            linear_num_value_heads=4,
            num_experts=2,
            num_experts_per_tok=2,  # all experts: top-k flips at half-precision ties (tests/tiny_hybrids.py)
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
            **TINY,
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
    # RWKV-4: the residual stream halved after layers 1 and 3 (rescale_every 2)
    "rwkv": lambda: RwkvForCausalLM(RwkvConfig(**TINY, rescale_every=2, context_length=64)),
    # mLSTM: 4 heads (keys 2, values 4), no convolution
    "xlstm": lambda: xLSTMForCausalLM(
        xLSTMConfig(
            vocab_size=TINY_VOCAB,
            hidden_size=16,
            num_hidden_layers=4,
            num_heads=4,
            chunk_size=4,
            ffn_round_up_to_multiple_of=16,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
    ),
}
SSM_FAMILIES = ("mamba", "falcon_mamba", "mamba2", "qwen3_next", "olmo_hybrid", "recurrent_gemma")
SSM_FAMILIES += ("rwkv", "xlstm")


def supported_modes(model: CausalLM) -> list[KnockoutMode]:
    """The knockout modes some layer of ``model`` supports, in their declared order."""
    return [mode for mode in KnockoutMode if any(mode in model.mixer(i).knockout_modes for i in range(model.n_layers))]


def supports_strict(model: CausalLM) -> bool:
    """Some layer of ``model`` has short-range taps that a strict knockout removes (a conv, a token shift)."""
    return any(model.mixer(i).supports_strict for i in range(model.n_layers))


@pytest.fixture(scope="session")
def tiny_folder_factory(tmp_path_factory):
    """name -> the folder where the tiny transformers model ``name`` (random weights) is saved."""
    folders: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in folders:
            folders[name] = tmp_path_factory.mktemp(name)
            randomize_(TINY_MODELS[name](), seed=7).save_pretrained(folders[name])
        return folders[name]

    return get


@pytest.fixture(scope="session")
def tiny_model_factory(tiny_folder_factory):
    """name -> our fp32 model loaded from ``tiny_folder_factory(name)`` through the real loader."""
    cache: dict[str, CausalLM] = {}

    def get(name: str) -> CausalLM:
        if name not in cache:
            cache[name], _ = load_hf_folder(tiny_folder_factory(name))
        return cache[name]

    return get


@pytest.fixture(scope="session", params=sorted(TINY_MODELS))
def tiny_model(request, tiny_model_factory) -> CausalLM:
    return tiny_model_factory(request.param)


@pytest.fixture(scope="session", params=SSM_FAMILIES)
def tiny_ssm(request, tiny_model_factory) -> CausalLM:
    return tiny_model_factory(request.param)
