"""Configs of the builtin models: transformers' own classes, about 1.5-2 M parameters each.

Every family has 8 layers (so knockout windows mean the same depth fraction everywhere) and ties its
output embedding to its input embedding. Sizes keep each in float32 under 8 MB. Two are hybrids: Bamba
(Mamba-2 layers and 2 attention layers) and Qwen3.5 (Gated DeltaNet layers and 1 attention layer in 4); both
train on transformers' torch path, without custom CUDA kernels.
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import (
    BambaConfig,
    BambaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Mamba2Config,
    Mamba2ForCausalLM,
    MambaConfig,
    MambaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    Qwen3_5ForCausalLM,
    Qwen3_5TextConfig,
)

FAMILIES = ("mamba1", "mamba2", "gpt2", "llama", "bamba", "qwen3.5")
N_LAYERS = 8


def _mamba1(vocab_size: int, special_id: int) -> PretrainedConfig:
    # d=160, inner E = expand * d = 320 channels, state N = 16, dt rank ceil(d / 16) = 10.
    # conv1d of width 2 (real checkpoints: 4). Reference knockout leaves the conv in place, so the subject
    # reaches a target in the same layer through the conv inputs of the (width - 1) tokens after it; with
    # width 4 this small model learns to route its recall through that leak (subject -> last knocked out in
    # every layer: -21 % at width 4, -85 % at width 2, -87 % with --strict at width 4; docs/builtin-models.md).
    return MambaConfig(
        vocab_size=vocab_size,
        hidden_size=160,
        state_size=16,
        expand=2,
        conv_kernel=2,
        num_hidden_layers=N_LAYERS,
        bos_token_id=special_id,
        eos_token_id=special_id,
        pad_token_id=special_id,
        tie_word_embeddings=True,
    )


def _mamba2(vocab_size: int, special_id: int) -> PretrainedConfig:
    # d=160, inner E = 2 * 160 = 320 = num_heads (10) * head_dim (32); one B/C group, state N = 32
    return Mamba2Config(
        vocab_size=vocab_size,
        hidden_size=160,
        expand=2,
        num_heads=10,
        head_dim=32,
        n_groups=1,
        state_size=32,
        chunk_size=32,
        num_hidden_layers=N_LAYERS,
        bos_token_id=special_id,
        eos_token_id=special_id,
        pad_token_id=special_id,
        tie_word_embeddings=True,
    )


def _gpt2(vocab_size: int, special_id: int) -> PretrainedConfig:
    # d=128, 4 heads of 32, MLP 4d
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=128,
        n_embd=128,
        n_layer=N_LAYERS,
        n_head=4,
        resid_pdrop=0.0,  # no dropout: the task is to memorise facts
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=special_id,
        eos_token_id=special_id,
        pad_token_id=special_id,
        tie_word_embeddings=True,
    )


def _llama(vocab_size: int, special_id: int) -> PretrainedConfig:
    # d=128, 4 query heads of 32, 2 key/value heads (grouped-query attention), SwiGLU MLP of 384
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=special_id,
        eos_token_id=special_id,
        pad_token_id=special_id,
        tie_word_embeddings=True,
    )


def _bamba(vocab_size: int, special_id: int) -> PretrainedConfig:
    # d=128; Mamba-2 layers as builtin-mamba2's (inner 256 = 8 heads of 32, one B/C group, state 32, conv1d of
    # width 4) except layers 2 and 5: attention, 4 query / 2 KV heads of 32 with rotary positions. A SwiGLU MLP
    # of 192 in every layer (Bamba's layout). Attention in both halves of the depth, so that windows of half the
    # depth all hold one attention layer or more, and "through attention" is measurable at every depth.
    return BambaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=192,
        num_hidden_layers=N_LAYERS,
        attn_layer_indices=[2, 5],
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        mamba_n_heads=8,
        mamba_d_head=32,
        mamba_expand=2,
        mamba_n_groups=1,
        mamba_d_state=32,
        mamba_d_conv=4,
        mamba_chunk_size=32,
        bos_token_id=special_id,
        eos_token_id=special_id,
        pad_token_id=special_id,
        tie_word_embeddings=True,
    )


def _qwen3_5(vocab_size: int, special_id: int) -> PretrainedConfig:
    # d=128; Qwen3.5's dense text model: layers 3 and 7 gated attention (4 query / 2 KV heads of 32, QK-norm,
    # rotary on a quarter of each head), the other six Gated DeltaNet (2 key heads and 4 value heads of 32,
    # short conv of width 4); a SwiGLU MLP of 256 in every layer
    return Qwen3_5TextConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=32,
        linear_value_head_dim=32,
        max_position_embeddings=128,
        bos_token_id=special_id,
        eos_token_id=special_id,
        pad_token_id=special_id,
        tie_word_embeddings=True,
    )


BUILDERS: dict[str, tuple[Callable[[int, int], PretrainedConfig], type[PreTrainedModel]]] = {
    "mamba1": (_mamba1, MambaForCausalLM),
    "mamba2": (_mamba2, Mamba2ForCausalLM),
    "gpt2": (_gpt2, GPT2LMHeadModel),
    "llama": (_llama, LlamaForCausalLM),
    "bamba": (_bamba, BambaForCausalLM),
    "qwen3.5": (_qwen3_5, Qwen3_5ForCausalLM),
}


def build_model(family: str, vocab_size: int, special_id: int) -> PreTrainedModel:
    """A freshly initialised transformers model of ``family`` (seed torch beforehand for reproducibility)."""
    if family not in BUILDERS:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    make_config, model_class = BUILDERS[family]
    return model_class(make_config(vocab_size, special_id))
