"""Tiny random hybrid models (Mamba and attention layers in one network), enrolled in ``conftest.TINY_MODELS``.

Four layers each, so that the property and fast-engine suites' windows cover every kind of layer; Mamba-2
chunks of 4 positions, so that their prompts (up to 9 tokens) take the multi-chunk path.

Their MoE layers route every position to all of their experts. Choosing the top k is discontinuous: where two
experts' scores (nearly) tie, the rounding differences between the engines in bf16 (router logits in bf16 tie
often) can pick different experts, and the probabilities then differ by far more than rounding. The oracle
tests check top-k routing (k < E) against transformers, and the engines against each other in fp32.
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import (
    BambaConfig,
    BambaForCausalLM,
    GraniteMoeHybridConfig,
    GraniteMoeHybridForCausalLM,
    JambaConfig,
    JambaForCausalLM,
    NemotronHConfig,
    NemotronHForCausalLM,
    PreTrainedModel,
)


def tiny_hybrids(vocab: int) -> dict[str, Callable[[], PreTrainedModel]]:
    """Family name -> a constructor of its tiny transformers model with ``vocab`` tokens."""
    return {
        "bamba": lambda: BambaForCausalLM(
            BambaConfig(
                vocab_size=vocab,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=4,
                num_attention_heads=4,
                num_key_value_heads=2,
                attn_layer_indices=[1],
                mamba_n_heads=4,
                mamba_d_head=8,
                mamba_d_state=8,
                mamba_chunk_size=4,
            )
        ),
        "granitemoehybrid": lambda: GraniteMoeHybridForCausalLM(
            GraniteMoeHybridConfig(
                vocab_size=vocab,
                hidden_size=16,
                intermediate_size=16,
                shared_intermediate_size=16,
                num_hidden_layers=4,
                num_attention_heads=4,
                num_key_value_heads=2,
                num_local_experts=2,
                num_experts_per_tok=2,  # every expert: see the module docstring
                layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention"],
                mamba_n_heads=4,
                mamba_d_head=8,
                mamba_d_state=8,
                mamba_chunk_size=4,
                embedding_multiplier=2.0,
                residual_multiplier=0.5,
                attention_multiplier=0.3,
                logits_scaling=2.0,
            )
        ),
        "nemotron_h": lambda: NemotronHForCausalLM(
            NemotronHConfig(
                vocab_size=vocab,
                hidden_size=16,
                hybrid_override_pattern="M*-E",  # Mamba-2, attention, MLP, MoE
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=4,
                intermediate_size=16,
                mamba_num_heads=4,
                mamba_head_dim=8,
                ssm_state_size=8,
                n_groups=2,
                chunk_size=4,
                n_routed_experts=2,
                num_experts_per_tok=2,  # every expert: see the module docstring
                moe_intermediate_size=16,
                moe_shared_expert_intermediate_size=16,
            )
        ),
        "jamba": lambda: JambaForCausalLM(
            JambaConfig(
                vocab_size=vocab,
                hidden_size=16,
                intermediate_size=16,
                num_hidden_layers=4,
                num_attention_heads=4,
                num_key_value_heads=2,
                attn_layer_period=4,
                attn_layer_offset=2,  # layer 2 is attention
                expert_layer_period=2,
                expert_layer_offset=1,  # layers 1 and 3 have experts
                num_experts=2,
                num_experts_per_tok=2,  # every expert: see the module docstring
                mamba_d_state=4,
                mamba_dt_rank=2,
            )
        ),
    }
