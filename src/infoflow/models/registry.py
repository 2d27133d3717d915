"""Short names for the models of the paper (and the project's built-in models), resolved to hub ids."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelEntry:
    """A named model: where it lives, its family (see ``families.FAMILIES``) and what it is."""

    alias: str
    family: str
    description: str
    hub_id: str | None = None  # None for a built-in model shipped in the package
    n_layers: int | None = None

    @property
    def is_builtin(self) -> bool:
        return self.hub_id is None


BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin" / "models"  # one folder per built-in model


def builtin_name(entry: ModelEntry) -> str:
    """The built-in model's folder name in ``BUILTIN_DIR`` and its ``infoflow.builtin.train --family``."""
    return entry.alias.removeprefix("builtin-")


def shipped_builtins() -> tuple[str, ...]:
    """The built-in models whose weights this installation has (a new built-in is listed before it is trained)."""
    return tuple(
        entry.alias
        for entry in MODELS
        if entry.is_builtin and (BUILTIN_DIR / builtin_name(entry) / "config.json").exists()
    )


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
ACCEPTED_FORMS = (
    "accepted: a name from `infoflow models` (e.g. mamba1-130m, gpt2-xl, builtin-mamba1), a .gguf file, "
    "a transformers folder (config.json with model_type, and weights), an original state-spaces Mamba folder "
    "(config.json with ssm_cfg, pytorch_model.bin), or a hub id such as state-spaces/mamba-130m-hf"
)
GATED = " (gated: accept its license on the hub, then set HF_TOKEN)"


def _hub(alias: str, hub_id: str, family: str, n_layers: int, description: str) -> ModelEntry:
    return ModelEntry(alias=alias, family=family, description=description, hub_id=hub_id, n_layers=n_layers)


# Pythia: (size, layers); the Mamba papers compare each Mamba size with the Pythia of about its size, trained on
# the same data with the same tokenizer: the fairest Transformer baseline for a Mamba model
PYTHIA_SIZES = (
    ("70m", 6),
    ("160m", 12),
    ("410m", 24),
    ("1b", 16),
    ("1.4b", 24),
    ("2.8b", 32),
    ("6.9b", 32),
    ("12b", 36),
)
PYTHIA_MATCHING_MAMBA = {
    "160m": ("mamba1-130m", "mamba2-130m"),
    "410m": ("mamba1-370m", "mamba2-370m"),
    "1b": ("mamba1-790m", "mamba2-780m"),
    "1.4b": ("mamba1-1.4b", "mamba2-1.3b"),
    "2.8b": ("mamba1-2.8b", "mamba2-2.7b"),
}


def matched_mamba(pythia_size: str) -> str:
    """The description's note of the Mamba models the papers compare a Pythia size with ("" for none)."""
    matched = PYTHIA_MATCHING_MAMBA.get(pythia_size)
    return f"; compared with {', '.join(matched)} in the Mamba papers" if matched else ""


MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("builtin-mamba1", "mamba1", "small Mamba-1 trained by infoflow on synthetic facts (offline demo)"),
    ModelEntry("builtin-mamba2", "mamba2", "small Mamba-2 trained by infoflow on synthetic facts (offline demo)"),
    ModelEntry("builtin-gpt2", "gpt2", "small GPT-2 trained by infoflow on synthetic facts (offline demo)"),
    ModelEntry("builtin-llama", "llama", "small Llama trained by infoflow on synthetic facts (offline demo)"),
    ModelEntry(
        "builtin-bamba",
        "bamba",
        "small Bamba hybrid (Mamba-2 + 2 attention layers) trained by infoflow on synthetic facts",
    ),
    ModelEntry(
        "builtin-qwen3.5",
        "qwen3_5",
        "small Qwen3.5 hybrid (Gated DeltaNet 3:1 attention) trained by infoflow on synthetic facts",
    ),
    _hub("mamba1-130m", "state-spaces/mamba-130m-hf", "mamba1", 24, "Mamba-1 130M (Pile)"),
    _hub("mamba1-370m", "state-spaces/mamba-370m-hf", "mamba1", 48, "Mamba-1 370M (Pile)"),
    _hub("mamba1-790m", "state-spaces/mamba-790m-hf", "mamba1", 48, "Mamba-1 790M (Pile)"),
    _hub("mamba1-1.4b", "state-spaces/mamba-1.4b-hf", "mamba1", 48, "Mamba-1 1.4B (Pile)"),
    _hub("mamba1-2.8b", "state-spaces/mamba-2.8b-hf", "mamba1", 64, "Mamba-1 2.8B (Pile)"),
    _hub("mamba1-7b", "TRI-ML/mamba-7b-rw", "mamba1", 64, "Mamba-1 7B by TRI (RefinedWeb)"),
    _hub("falcon-mamba-7b", "tiiuae/falcon-mamba-7b", "mamba1", 64, "Falcon-Mamba 7B (Mamba-1 with B/C/dt norms)"),
    _hub("falcon3-mamba-7b-base", "tiiuae/Falcon3-Mamba-7B-Base", "mamba1", 64, "Falcon3-Mamba 7B base"),
    *(
        _hub(
            f"mamba2-{size}",
            f"state-spaces/mamba2-{size}",
            "mamba2",
            n_layers,
            f"Mamba-2 {size.upper()} (Pile; original state-spaces format, GPT-NeoX-20B tokenizer)",
        )
        for size, n_layers in (("130m", 24), ("370m", 48), ("780m", 48), ("1.3b", 48), ("2.7b", 64))
    ),
    _hub("gpt2", "openai-community/gpt2", "gpt2", 12, "GPT-2 124M"),
    _hub("gpt2-medium", "openai-community/gpt2-medium", "gpt2", 24, "GPT-2 355M"),
    _hub("gpt2-large", "openai-community/gpt2-large", "gpt2", 36, "GPT-2 774M"),
    _hub("gpt2-xl", "openai-community/gpt2-xl", "gpt2", 48, "GPT-2 1.5B"),
    _hub("llama3.2-1b", "meta-llama/Llama-3.2-1B", "llama", 16, "Llama 3.2 1B" + GATED),
    _hub("llama3.2-3b", "meta-llama/Llama-3.2-3B", "llama", 28, "Llama 3.2 3B" + GATED),
    _hub("llama3-8b", "meta-llama/Meta-Llama-3-8B", "llama", 32, "Llama 3 8B" + GATED),
    _hub("llama2-7b", "meta-llama/Llama-2-7b-hf", "llama", 32, "Llama 2 7B" + GATED),
    _hub("mistral0.1-7b", "mistralai/Mistral-7B-v0.1", "llama", 32, "Mistral 7B v0.1" + GATED),
    _hub("mistral0.3-7b", "mistralai/Mistral-7B-v0.3", "llama", 32, "Mistral 7B v0.3" + GATED),
    _hub("qwen2-0.5b", "Qwen/Qwen2-0.5B", "llama", 24, "Qwen2 0.5B"),
    _hub("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B", "llama", 24, "Qwen2.5 0.5B"),
    _hub("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B", "llama", 28, "Qwen2.5 1.5B"),
    _hub("smollm2-135m", "HuggingFaceTB/SmolLM2-135M", "llama", 30, "SmolLM2 135M (Llama architecture)"),
    _hub("gpt-j-6b", "EleutherAI/gpt-j-6b", "gptj", 28, "GPT-J 6B (Pile)"),
    *(
        _hub(
            f"pythia-{size}",
            f"EleutherAI/pythia-{size}",
            "gpt_neox",
            n_layers,
            f"Pythia {size.upper()} (Pile)" + matched_mamba(size),
        )
        for size, n_layers in PYTHIA_SIZES
    ),
    _hub("phi3-mini-4k-instruct", "microsoft/Phi-3-mini-4k-instruct", "phi3", 32, "Phi-3 mini 3.8B instruct (4k)"),
    _hub("qwen3-0.6b", "Qwen/Qwen3-0.6B", "qwen3", 28, "Qwen3 0.6B (post-trained)"),
    _hub("qwen3-0.6b-base", "Qwen/Qwen3-0.6B-Base", "qwen3", 28, "Qwen3 0.6B base"),
    _hub("qwen3-1.7b", "Qwen/Qwen3-1.7B", "qwen3", 28, "Qwen3 1.7B (post-trained)"),
    _hub("qwen3-1.7b-base", "Qwen/Qwen3-1.7B-Base", "qwen3", 28, "Qwen3 1.7B base"),
    _hub("olmo2-1b", "allenai/OLMo-2-0425-1B", "olmo2", 16, "OLMo 2 1B (April 2025)"),
    _hub("gemma2-2b", "google/gemma-2-2b", "gemma2", 26, "Gemma 2 2B" + GATED),
    _hub("gemma3-270m", "google/gemma-3-270m", "gemma3", 18, "Gemma 3 270M (text)" + GATED),
    _hub("gemma3-1b", "google/gemma-3-1b-pt", "gemma3", 26, "Gemma 3 1B (text)" + GATED),
    # hybrids: Mamba layers and attention layers in one network (see docs/hybrids.md)
    _hub("bamba-9b", "ibm-ai-platform/Bamba-9B-v2", "bamba", 32, "Bamba 9.8B v2 (Mamba-2 + 3 attention layers)"),
    _hub("bamba-9b-v1", "ibm-ai-platform/Bamba-9B", "bamba", 32, "Bamba 9.8B v1 (Mamba-2 + 3 attention layers)"),
    _hub(
        "granite4.0-h-350m",
        "ibm-granite/granite-4.0-h-350m",
        "granitemoehybrid",
        32,
        "Granite 4.0-H 350M (Mamba-2 + NoPE attention)",
    ),
    _hub(
        "granite4.0-h-1b",
        "ibm-granite/granite-4.0-h-1b",
        "granitemoehybrid",
        40,
        "Granite 4.0-H 1B (Mamba-2 + NoPE attention)",
    ),
    _hub("jamba-tiny-dev", "ai21labs/Jamba-tiny-dev", "jamba", 16, "Jamba tiny dev 319M (Mamba-1 + attention + MoE)"),
    *(
        _hub(
            f"nemotron-h-{size.lower()}",
            f"nvidia/Nemotron-H-{size}-Base-8K",
            "nemotron_h",
            52,
            f"Nemotron-H {size} base (Mamba-2 + attention + MLP layers; NVIDIA research license)",
        )
        for size in ("4B", "8B")
    ),
    _hub(
        "falcon-h1-tiny-90m",
        "tiiuae/Falcon-H1-Tiny-90M-Base",
        "falcon_h1",
        24,
        "Falcon-H1-Tiny 90M base (attention and Mamba-2 in parallel in every layer)",
    ),
    _hub("falcon-h1-0.5b", "tiiuae/Falcon-H1-0.5B-Base", "falcon_h1", 36, "Falcon-H1 0.5B base (parallel hybrid)"),
    # Zamba2: each hybrid layer counts as two layers here (the shared block's call site, then Mamba-2)
    _hub("zamba2-1.2b", "Zyphra/Zamba2-1.2B", "zamba2", 44, "Zamba2 1.2B (38 Mamba-2 layers, 6 shared-block calls)"),
    _hub("zamba2-2.7b", "Zyphra/Zamba2-2.7B", "zamba2", 63, "Zamba2 2.7B (54 Mamba-2 layers, 9 calls of 2 blocks)"),
    _hub("qwen3.5-0.8b", "Qwen/Qwen3.5-0.8B", "qwen3_5", 24, "Qwen3.5 0.8B (Gated DeltaNet 3:1 attention; text model)"),
    _hub("qwen3.5-0.8b-base", "Qwen/Qwen3.5-0.8B-Base", "qwen3_5", 24, "Qwen3.5 0.8B base (Gated DeltaNet hybrid)"),
    _hub("qwen3.5-9b", "Qwen/Qwen3.5-9B", "qwen3_5", 32, "Qwen3.5 9B (Gated DeltaNet 3:1 attention; text model)"),
    *(
        _hub(
            f"qwen3-next-80b-a3b-{variant.lower()}",
            f"Qwen/Qwen3-Next-80B-A3B-{variant}",
            "qwen3_next",
            48,
            f"Qwen3-Next 80B-A3B {variant} (Gated DeltaNet 3:1 gated attention, MoE)",
        )
        for variant in ("Instruct", "Thinking")
    ),
    _hub("recurrentgemma-2b", "google/recurrentgemma-2b", "recurrent_gemma", 26, "RecurrentGemma 2B (RG-LRU)" + GATED),
    _hub(
        "recurrentgemma-2b-it",
        "google/recurrentgemma-2b-it",
        "recurrent_gemma",
        26,
        "RecurrentGemma 2B instruct" + GATED,
    ),
    _hub("olmo-hybrid-7b", "allenai/Olmo-Hybrid-7B", "olmo_hybrid", 32, "OLMo-Hybrid 7B (Gated DeltaNet + attention)"),
    *(
        _hub(
            f"lfm2-{size.lower()}",
            f"LiquidAI/LFM2-{size}",
            "lfm2",
            16,
            f"LFM2 {size} (gated short convolutions + attention)",
        )
        for size in ("350M", "700M", "1.2B")
    ),
    *(
        _hub(f"rwkv4-{size}", f"RWKV/rwkv-4-{size}-pile", "rwkv", n_layers, f"RWKV-4 {size.upper()} (Pile)")
        for size, n_layers in (("169m", 12), ("430m", 24), ("1b5", 24), ("3b", 32), ("7b", 32), ("14b", 40))
    ),
    _hub("xlstm-7b", "NX-AI/xLSTM-7b", "xlstm", 32, "xLSTM 7B (mLSTM, matrix memory with exponential gates)"),
)


def list_models() -> list[ModelEntry]:
    """Every named model, built-ins first, in the order of the paper's families."""
    return list(MODELS)


def find_model(name: str) -> ModelEntry | None:
    """The entry whose alias or hub id is ``name`` (case-insensitive), or None."""
    key = name.strip().lower()
    for entry in MODELS:
        if key == entry.alias or (entry.hub_id is not None and key == entry.hub_id.lower()):
            return entry
    return None


def check_model_name(name: str) -> None:
    """A ``ValueError`` unless ``name`` can name a model: a known name, an existing local path, or something
    shaped like a hub id (org/name; whether the hub has it is known only by asking). Reads no weights and
    imports no torch, so that a typo is refused at once."""
    if find_model(name) is not None or Path(name).expanduser().exists():
        return
    if name.startswith(("/", ".", "~")) or name.endswith(".gguf"):
        raise ValueError(f"no such file or folder: {name}")
    if not HUB_ID.fullmatch(name):
        raise ValueError(unknown_model_message(name))


def unknown_model_message(name: str) -> str:
    aliases = [entry.alias for entry in list_models()]
    close = difflib.get_close_matches(name.lower(), aliases, n=3)
    hint = f"Did you mean {', '.join(close)}? " if close else ""
    return (
        f"unknown model {name!r}: not a known name, an existing local path or a hub id (org/name). {hint}"
        f"Known names (`infoflow models`): {', '.join(aliases)}; {ACCEPTED_FORMS}"
    )
