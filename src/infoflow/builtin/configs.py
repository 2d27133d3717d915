"""Configs of the builtin models: transformers' own classes, about 1.5-2 M parameters each.

Every family has 8 layers (so knockout windows mean the same depth fraction everywhere) and ties its
output embedding to its input embedding. Sizes keep all four in float32 under 40 MB together.
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import (
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
)

FAMILIES = ("mamba1", "mamba2", "gpt2", "llama")
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


BUILDERS: dict[str, tuple[Callable[[int, int], PretrainedConfig], type[PreTrainedModel]]] = {
    "mamba1": (_mamba1, MambaForCausalLM),
    "mamba2": (_mamba2, Mamba2ForCausalLM),
    "gpt2": (_gpt2, GPT2LMHeadModel),
    "llama": (_llama, LlamaForCausalLM),
}


def build_model(family: str, vocab_size: int, special_id: int) -> PreTrainedModel:
    """A freshly initialised transformers model of ``family`` (seed torch beforehand for reproducibility)."""
    if family not in BUILDERS:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    make_config, model_class = BUILDERS[family]
    return model_class(make_config(vocab_size, special_id))
