"""Bamba (IBM): Mamba-2 layers with a few full-attention layers (``attn_layer_indices``), each with a SwiGLU MLP.

Per layer l (``config.layer_types[l]``: ``linear_attention`` or ``full_attention``):

    h = h + mixer_l(input_layernorm(h)),    h = h + down(act(gate(y)) * up(y)),  y = pre_ff_layernorm(h)

where mixer_l is Mamba-2's SSD (:mod:`infoflow.models.mamba2`; the gated norm over all Di channels at once)
or grouped-query attention with rotary embeddings on the first ``partial_rotary_factor`` (0.5) of each
head's channels (:mod:`infoflow.models.llama`). Logits = lm_head(final_layernorm(h)).
"""

from __future__ import annotations

from torch import nn
from transformers import PretrainedConfig

from infoflow.models.base import Block, CausalLM, RMSNorm, TokenMixer
from infoflow.models.families import renamer
from infoflow.models.llama import GatedMLP, LlamaAttention
from infoflow.models.mamba2 import Mamba2Mixer
from infoflow.models.rotary import Rotary

SSM_LAYER, ATTENTION_LAYER = "linear_attention", "full_attention"


def layer_types(config: PretrainedConfig, allowed: tuple[str, ...] = (SSM_LAYER, ATTENTION_LAYER)) -> list[str]:
    """``config.layer_types``, checked against the kinds of layer the family builds."""
    types = list(config.layer_types)
    unknown = sorted(set(types) - set(allowed))
    if unknown:
        raise ValueError(f"{config.model_type} layer types {unknown} are not supported (supported: {list(allowed)})")
    return types


def check_silu(activation: str, name: str) -> None:
    """The Mamba-2 conv is followed by SiLU (what every released checkpoint uses)."""
    if activation != "silu":
        raise ValueError(f"{name}={activation!r} is not supported for the Mamba-2 conv (only 'silu')")


def mamba2_mixer(config: PretrainedConfig) -> Mamba2Mixer:
    """The Mamba-2 mixer of a Bamba or Granite 4.0-H config (``mamba_*`` fields; one gated norm over Di)."""
    check_silu(config.hidden_act, "hidden_act")
    d_inner = config.mamba_n_heads * config.mamba_d_head
    return Mamba2Mixer(
        d_model=config.hidden_size,
        n_heads=config.mamba_n_heads,
        head_dim=config.mamba_d_head,
        d_state=config.mamba_d_state,
        n_groups=config.mamba_n_groups,
        d_conv=config.mamba_d_conv,
        conv_bias=config.mamba_conv_bias,
        proj_bias=config.mamba_proj_bias,
        norm_eps=config.rms_norm_eps,
        norm_group_size=d_inner,
        time_step_limit=(float(config.time_step_limit[0]), float(config.time_step_limit[1])),
        chunk_size=config.mamba_chunk_size,
    )


def build(config: PretrainedConfig) -> CausalLM:
    """A Bamba model (``model_type`` bamba) from a transformers config."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rotary = Rotary(config, head_dim)  # shared by the attention layers
    d_model, eps = config.hidden_size, config.rms_norm_eps

    def mixer(layer: int, kind: str) -> TokenMixer:
        return LlamaAttention(config, layer, rotary) if kind == ATTENTION_LAYER else mamba2_mixer(config)

    blocks = [
        Block(
            RMSNorm(d_model, eps),
            mixer(layer, kind),
            RMSNorm(d_model, eps),
            GatedMLP(d_model, config.intermediate_size, config.hidden_act, config.mlp_bias),
        )
        for layer, kind in enumerate(layer_types(config))
    ]
    return CausalLM(
        family="bamba",
        embed=nn.Embedding(config.vocab_size, d_model),
        blocks=blocks,
        final_norm=RMSNorm(d_model, eps),
        lm_head=nn.Linear(d_model, config.vocab_size, bias=False),
    )


# transformers' parameter names -> ours
convert_state_dict = renamer(
    (
        (r"^model\.embed_tokens\.", "embed."),
        (r"^model\.layers\.(\d+)\.input_layernorm\.", r"blocks.\1.mixer_norm."),
        (r"^model\.layers\.(\d+)\.(mamba|self_attn)\.", r"blocks.\1.mixer."),
        (r"^model\.layers\.(\d+)\.pre_ff_layernorm\.", r"blocks.\1.mlp_norm."),
        (r"^model\.layers\.(\d+)\.feed_forward\.", r"blocks.\1.mlp."),
        (r"^model\.final_layernorm\.", "final_norm."),
    )
)
