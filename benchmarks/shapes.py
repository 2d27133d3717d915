"""transformers configs of the real model shapes, for random-weight benchmarks (no download needed)."""

from __future__ import annotations

from collections.abc import Callable

from transformers import (
    BambaConfig,
    GPT2Config,
    LlamaConfig,
    Mamba2Config,
    MambaConfig,
    PretrainedConfig,
    Qwen3NextConfig,
)

NEOX_VOCAB = 50280


def mamba1(d_model: int, n_layers: int) -> PretrainedConfig:
    return MambaConfig(vocab_size=NEOX_VOCAB, hidden_size=d_model, num_hidden_layers=n_layers, state_size=16)


def mamba2(d_model: int, n_layers: int) -> PretrainedConfig:
    return Mamba2Config(
        vocab_size=NEOX_VOCAB, hidden_size=d_model, num_hidden_layers=n_layers, state_size=128,
        head_dim=64, num_heads=2 * d_model // 64, n_groups=1, expand=2,
    )  # fmt: skip


def bamba(d_model: int, n_layers: int, attention_every: int) -> PretrainedConfig:
    """A Mamba-2 + attention hybrid as Bamba lays it out: attention at every ``attention_every``-th layer."""
    return BambaConfig(
        vocab_size=NEOX_VOCAB, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
        num_attention_heads=d_model // 128, num_key_value_heads=d_model // 512, mamba_n_heads=2 * d_model // 64,
        mamba_d_head=64, mamba_d_state=128, mamba_n_groups=1, mamba_expand=2,
        attn_layer_indices=list(range(attention_every - 1, n_layers, attention_every)),
    )  # fmt: skip


def gated_deltanet(d_model: int, n_layers: int) -> PretrainedConfig:
    """A dense Gated DeltaNet hybrid as Qwen3-Next lays it out: 3 Gated DeltaNet layers to 1 attention layer."""
    return Qwen3NextConfig(
        vocab_size=NEOX_VOCAB, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
        num_attention_heads=d_model // 128, num_key_value_heads=2, head_dim=128, linear_num_key_heads=d_model // 128,
        linear_num_value_heads=d_model // 64, linear_key_head_dim=128, linear_value_head_dim=128, num_experts=0,
        layer_types=["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(n_layers)],
    )  # fmt: skip


SHAPES: dict[str, Callable[[], PretrainedConfig]] = {
    "mamba1-130m": lambda: mamba1(768, 24),
    "mamba1-1.4b": lambda: mamba1(2048, 48),
    "mamba1-2.8b": lambda: mamba1(2560, 64),
    "mamba2-130m": lambda: mamba2(768, 24),
    "mamba2-1.3b": lambda: mamba2(2048, 48),
    "mamba2-2.7b": lambda: mamba2(2560, 64),
    "hybrid-mamba2-1.4b": lambda: bamba(2048, 24, 6),
    "hybrid-gdn-1.5b": lambda: gated_deltanet(2048, 24),
    "gpt2-medium": lambda: GPT2Config(n_embd=1024, n_layer=24, n_head=16),
    "gpt2-xl": lambda: GPT2Config(n_embd=1600, n_layer=48, n_head=25),
    "llama3.2-1b": lambda: LlamaConfig(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    ),
    "smollm2-135m": lambda: LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
    ),
}  # fmt: skip
