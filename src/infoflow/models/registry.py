"""Short names for the models of the paper (and the project's built-in models), resolved to hub ids."""

from __future__ import annotations

from dataclasses import dataclass


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


GATED = " (gated: accept its license on the hub, then set HF_TOKEN)"


def _hub(alias: str, hub_id: str, family: str, n_layers: int, description: str) -> ModelEntry:
    return ModelEntry(alias=alias, family=family, description=description, hub_id=hub_id, n_layers=n_layers)


MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("builtin-mamba1", "mamba1", "small Mamba-1 trained by infoflow on synthetic facts (offline demo)"),
    ModelEntry("builtin-mamba2", "mamba2", "small Mamba-2 trained by infoflow on synthetic facts (offline demo)"),
    ModelEntry("builtin-gpt2", "gpt2", "small GPT-2 trained by infoflow on synthetic facts (offline demo)"),
    ModelEntry("builtin-llama", "llama", "small Llama trained by infoflow on synthetic facts (offline demo)"),
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
