"""Zamba2: Mamba-2 layers, with shared transformer blocks (attention + MLP) applied before some of them to the
residual stream concatenated with the original token embeddings.

transformers' layer i of type ``hybrid``, with e the token embeddings and k the call site's index (the k-th
hybrid layer), uses shared block b = k mod ``num_mem_blocks``, one set of weights for all its call sites:

    x = norm_in([h, e])                                                       [B, T, 2D]
    a = o_proj(Attn(q, k, v)),   q = (W_q + L^q_k) x  (likewise k, v)         L_k: the call site's LoRA adapter
    t = lin_i(down(act(g) * u)),   [g, u] = (W_gu + L^gu_k) norm_ff(a)         lin_i: the call site's projection
    h = h + Mamba2(norm_i(h + t))

(attention scale (P / 2)^-1/2 over head width P = 2D / heads, RoPE where ``use_mem_rope``); a ``mamba`` layer is
``h = h + Mamba2(norm_i(h))``.

**Layers here.** A hybrid layer has two token mixers in sequence, the second reading the first's output at
the same positions, so it is split in two layers: the shared block's call site (a layer of kind attention),
then the Mamba-2 layer. Every layer then has one mixer whose hidden attention is one matrix, the engines run
it unchanged, and a knockout window counts attention call sites as layers: the model has
``num_hidden_layers + len(hybrid layers)`` layers (transformers' hybrid layer i is our layers j, j + 1).

**The residual stream** carries three slots of width D, ``[h, e, t]``: the embedding layer writes
``[emb, emb, 0]``; a call site reads ``[h, e]`` and sets ``t``; a Mamba-2 layer reads ``h + t``, updates ``h`` and
clears ``t``; the final norm reads ``h``. Every step is transformers' own arithmetic (``h + 0`` is exact), the
original embeddings reach every call site without new engine inputs, and a knockout still changes nothing
before its first target position or its first layer.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from infoflow.models.attention import AttentionInputs
from infoflow.models.base import Block, CausalLM, LayerIntervention, RMSNorm, site_value
from infoflow.models.families import StateDict
from infoflow.models.mamba2 import Mamba2Mixer
from infoflow.models.modes import Site
from infoflow.models.rotary import Rotary, RotaryAttention


def residual(stream: torch.Tensor) -> torch.Tensor:
    """h: the first slot of the stream [h, e, t]."""
    return stream[..., : stream.shape[-1] // 3]


def residual_and_embeddings(stream: torch.Tensor) -> torch.Tensor:
    """[h, e] (width 2D), what a shared block reads."""
    return stream[..., : 2 * (stream.shape[-1] // 3)]


def residual_plus_transformer(stream: torch.Tensor) -> torch.Tensor:
    """h + t, what a Mamba-2 layer reads (t = 0 unless a shared block ran just before)."""
    h, _, t = stream.chunk(3, dim=-1)
    return h + t


class ReadNorm(RMSNorm):
    """RMSNorm of what a layer reads from the stream [h, e, t] (``read``: one of the functions above)."""

    def __init__(self, dim: int, eps: float, read: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__(dim, eps)
        self.read = read

    def forward(self, stream: torch.Tensor) -> torch.Tensor:
        return super().forward(self.read(stream))


class StreamEmbedding(nn.Embedding):
    """Token ids [B, T] -> the stream [emb, emb, 0] [B, T, 3D]."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embedded = super().forward(input_ids)
        return torch.cat([embedded, embedded, torch.zeros_like(embedded)], dim=-1)


def lora(d_in: int, rank: int, d_out: int) -> nn.Sequential:
    """A call site's low-rank adapter ``B A x`` (A: d_in -> rank, B: rank -> d_out), no bias."""
    return nn.Sequential(nn.Linear(d_in, rank, bias=False), nn.Linear(rank, d_out, bias=False))


class SharedAttentionWeights(nn.Module):
    """The projections of a shared block's attention, used at each of its call sites."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        width, head_dim = config.attention_hidden_size, config.attention_head_dim  # 2D, 2D / heads
        self.q_proj = nn.Linear(width, config.num_attention_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(width, config.num_key_value_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(width, config.num_key_value_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(config.num_attention_heads * head_dim, config.hidden_size, bias=False)


class Zamba2Attention(RotaryAttention):
    """One call site of a shared block's attention: the shared projections plus this site's q/k/v adapters."""

    def __init__(self, config: PretrainedConfig, shared: SharedAttentionWeights, rotary: Rotary | None) -> None:
        head_dim = config.attention_head_dim
        super().__init__(config.num_attention_heads, config.num_key_value_heads, head_dim, (head_dim / 2) ** -0.5, None)
        self.shared, self.rotary = shared, rotary
        self.adapters: nn.ModuleDict | None = None  # q, k, v -> this site's LoRA
        if config.use_shared_attention_adapter:
            width = config.attention_hidden_size  # in and out, as transformers has them
            if config.num_key_value_heads != config.num_attention_heads:
                raise ValueError("Zamba2's attention adapters need num_key_value_heads == num_attention_heads")
            self.adapters = nn.ModuleDict({name: lora(width, config.adapter_rank, width) for name in "qkv"})

    def projections(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heads = []
        for name in "qkv":
            projected = getattr(self.shared, f"{name}_proj")(hidden)  # [B, T, heads * P]
            if self.adapters is not None:
                projected = projected + self.adapters[name](hidden)
            heads.append(projected.unflatten(-1, (-1, self.head_dim)))  # [B, T, heads, P]
        q, k, v = heads
        return q, k, v

    def project(self, mixed: torch.Tensor, p: AttentionInputs) -> torch.Tensor:
        return self.shared.o_proj(mixed.flatten(2))


class SharedMLPWeights(nn.Module):
    """The projections of a shared block's MLP, used at each of its call sites."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.add_bias_linear)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.add_bias_linear)


class CallSiteMLP(nn.Module):
    """A call site's MLP and projection back: ``t = linear(down(act(g) * u))``, ``[g, u] = (W_gu + L_k) v``."""

    def __init__(self, config: PretrainedConfig, shared: SharedMLPWeights) -> None:
        super().__init__()
        self.shared = shared
        self.adapter = lora(config.hidden_size, config.adapter_rank, 2 * config.intermediate_size)
        self.linear = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = (self.shared.gate_up_proj(x) + self.adapter(x)).chunk(2, dim=-1)
        return self.linear(self.shared.down_proj(self.act(gate) * up))


@dataclass(frozen=True)
class SharedBlock:
    """The weights one shared transformer block lends to each of its call sites."""

    input_norm: ReadNorm  # over [h, e]
    attention: SharedAttentionWeights
    ff_norm: RMSNorm
    mlp: SharedMLPWeights

    @classmethod
    def of(cls, config: PretrainedConfig) -> SharedBlock:
        return cls(
            ReadNorm(config.attention_hidden_size, config.rms_norm_eps, residual_and_embeddings),
            SharedAttentionWeights(config),
            RMSNorm(config.hidden_size, config.rms_norm_eps),
            SharedMLPWeights(config),
        )


class CallSiteBlock(Block):
    """A shared block at one call site: ``t = mlp(norm_ff(attention(norm_in([h, e]))))`` into the stream's third
    slot (``mixer_norm`` reads [h, e]; h and e pass unchanged)."""

    def finish(
        self,
        hidden: torch.Tensor,
        mixed: torch.Tensor,
        prepared: Any,
        intervention: LayerIntervention | None = None,
        cut: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert self.mlp is not None and self.mlp_norm is not None
        update = site_value(intervention, Site.MIXER, self.mixer.project(mixed, prepared))
        t = site_value(intervention, Site.MLP, self.mlp(self.mlp_norm(update)))
        return site_value(intervention, Site.RESIDUAL, torch.cat([residual_and_embeddings(hidden), t], dim=-1))


class MambaBlock(Block):
    """``h = h + Mamba2(norm(h + t))``, t cleared (``mixer_norm`` reads h + t)."""

    def finish(
        self,
        hidden: torch.Tensor,
        mixed: torch.Tensor,
        prepared: Any,
        intervention: LayerIntervention | None = None,
        cut: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h, e, t = hidden.chunk(3, dim=-1)
        update = site_value(intervention, Site.MIXER, self.mixer.project(mixed, prepared))
        return site_value(intervention, Site.RESIDUAL, torch.cat([h + update, e, torch.zeros_like(t)], dim=-1))


def mamba_mixer(config: PretrainedConfig) -> Mamba2Mixer:
    d_inner = int(config.mamba_expand * config.hidden_size)
    return Mamba2Mixer(
        d_model=config.hidden_size,
        n_heads=config.n_mamba_heads,
        head_dim=config.mamba_headdim,
        d_state=config.mamba_d_state,
        n_groups=config.mamba_ngroups,
        d_conv=config.mamba_d_conv,
        conv_bias=True,  # transformers' Zamba2 always has a conv bias
        proj_bias=config.add_bias_linear,
        norm_eps=1e-5,  # transformers' Zamba2RMSNormGated eps, whatever rms_norm_eps says
        norm_group_size=d_inner // config.mamba_ngroups,
        time_step_limit=(float(config.time_step_min), float("inf")),
        chunk_size=config.chunk_size,
    )


LAYER_TYPES = ("hybrid", "linear_attention")


def build(config: PretrainedConfig) -> CausalLM:
    """A Zamba2 model from a transformers ``Zamba2Config`` (layer types from ``layers_block_type``)."""
    unknown = sorted(set(config.layers_block_type) - set(LAYER_TYPES))
    if unknown:
        raise ValueError(f"unknown Zamba2 layer types {unknown}; expected {', '.join(LAYER_TYPES)}")
    if config.hidden_act not in ACT2FN:
        raise ValueError(f"unknown hidden_act {config.hidden_act!r}")
    d_model, eps = config.hidden_size, config.rms_norm_eps
    rotary = Rotary(config, config.attention_head_dim) if config.use_mem_rope else None
    shared = [SharedBlock.of(config) for _ in range(config.num_mem_blocks)]
    blocks: list[Block] = []
    for layer_type in config.layers_block_type:
        if layer_type == "hybrid":
            block = shared[sum(isinstance(b, CallSiteBlock) for b in blocks) % config.num_mem_blocks]
            attention = Zamba2Attention(config, block.attention, rotary)
            blocks.append(CallSiteBlock(block.input_norm, attention, block.ff_norm, CallSiteMLP(config, block.mlp)))
        blocks.append(MambaBlock(ReadNorm(d_model, eps, residual_plus_transformer), mamba_mixer(config)))
    return CausalLM(
        family="zamba2",
        embed=StreamEmbedding(config.vocab_size, d_model),
        blocks=blocks,
        final_norm=ReadNorm(d_model, eps, residual),
        lm_head=nn.Linear(d_model, config.vocab_size, bias=False),
    )


HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
TOP_LEVEL = {"model.embed_tokens.weight": "embed.weight", "model.final_layernorm.weight": "final_norm.weight"}
MAMBA = re.compile(r"^(?:mamba_decoder\.)?(mamba\.|input_layernorm\.)(.+)$")


def call_site_rules(site: int) -> tuple[tuple[str, str | None], ...]:
    """(pattern, replacement) for a shared block's names (after ``shared_transformer.``) as seen from call site
    ``site``: the shared weights, this site's adapters, and None for other sites' adapters."""
    return (
        (rf"^self_attn\.linear_([qkv])_adapter_list\.{site}\.", r"mixer.adapters.\1."),
        (r"^feed_forward\.gate_up_proj_adapter_list\." + str(site) + r"\.", "mlp.adapter."),
        (r"^.*_adapter_list\.", None),
        (r"^input_layernorm\.", "mixer_norm."),
        (r"^self_attn\.", "mixer.shared."),
        (r"^pre_ff_layernorm\.", "mlp_norm."),
        (r"^feed_forward\.", "mlp.shared."),
    )


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours. transformers saves each shared block once, in its first call site's layer,
    with every call site's adapters; here each call site's layer lists the same tensors again (one set of weights
    in the model: the modules are shared). Names that fit nowhere are kept, for the loader to report."""
    layers: dict[int, dict[str, torch.Tensor]] = defaultdict(dict)
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if match := HF_LAYER.match(key):
            layers[int(match[1])][match[2]] = value
        else:
            converted[TOP_LEVEL.get(key, key)] = value
    hybrid = [i for i in sorted(layers) if "linear.weight" in layers[i]]
    ours = 0  # our layer index
    for i in sorted(layers):
        if i in hybrid:
            site = hybrid.index(i)
            adapter = f"shared_transformer.feed_forward.gate_up_proj_adapter_list.{site}.0.weight"
            owner = next((layers[j] for j in hybrid if adapter in layers[j]), {})
            converted[f"blocks.{ours}.mlp.linear.weight"] = layers[i].pop("linear.weight")
            for name, value in owner.items():
                if (ours_name := call_site_name(name, site)) is not None:
                    converted[f"blocks.{ours}.{ours_name}"] = value
            ours += 1
        for name, value in layers[i].items():
            if match := MAMBA.match(name):
                part = "mixer." if match[1] == "mamba." else "mixer_norm."
                converted[f"blocks.{ours}.{part}{match[2]}"] = value
            elif not name.startswith("shared_transformer."):
                converted[f"model.layers.{i}.{name}"] = value  # unexpected: the loader names it
        ours += 1
    return converted


def call_site_name(name: str, site: int) -> str | None:
    """Our name (under ``blocks.{layer}.``) of a shared block's weight at call site ``site``; None: not a shared
    block's weight, or another site's adapter."""
    if not name.startswith("shared_transformer."):
        return None
    name = name.removeprefix("shared_transformer.")
    for pattern, replacement in call_site_rules(site):
        if re.match(pattern, name):
            return None if replacement is None else re.sub(pattern, replacement, name)
    return name
