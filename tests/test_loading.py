"""load_model: names, local folders of every format, the hub cache, and the errors that say what to do."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    MambaConfig,
    MambaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from infoflow.models import CausalLM, LoadedModel, ModelLoadError, list_models, load_model
from infoflow.models import load as load_module
from infoflow.models.families import FAMILIES
from infoflow.models.registry import find_model
from tests.oracle import randomize_

VOCAB = ["<unk>", "<eos>", "The", "capital", "of", "France", "is", "Paris"]
PROMPT = "The capital of France is"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def save_tokenizer(folder: Path) -> None:
    """A tiny word-level tokenizer (no network needed)."""
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>").save_pretrained(folder)


def tiny_mamba() -> MambaForCausalLM:
    config = MambaConfig(vocab_size=len(VOCAB), hidden_size=16, state_size=4, num_hidden_layers=2, time_step_rank=2)
    return randomize_(MambaForCausalLM(config), seed=3)


def save_folder(model: PreTrainedModel, folder: Path, layout: str = "safetensors") -> Path:
    """``model`` and the tiny tokenizer in ``folder``, weights as one safetensors file, shards or a .bin."""
    if layout == "bin":
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    else:
        model.save_pretrained(folder, max_shard_size="8KB" if layout == "sharded" else "50GB")
    save_tokenizer(folder)
    return folder


def logits(model: torch.nn.Module, loaded: LoadedModel) -> tuple[torch.Tensor, torch.Tensor]:
    input_ids = loaded.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids).logits, loaded.model(input_ids)


def sha256_of(paths: list[Path]) -> str:
    return hashlib.sha256(b"".join(path.read_bytes() for path in paths)).hexdigest()


@pytest.fixture(scope="module")
def mamba():
    return tiny_mamba()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub access, and an empty hub cache of our own."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_registry_aliases():
    aliases = [entry.alias for entry in list_models()]
    assert len(aliases) == len(set(aliases)) and all(alias == alias.lower() for alias in aliases)
    assert {entry.family for entry in list_models()} <= {family.name for family in FAMILIES}
    expected = {
        "mamba1-130m": "state-spaces/mamba-130m-hf",
        "Mamba1-7B": "TRI-ML/mamba-7b-rw",
        "falcon-mamba-7b": "tiiuae/falcon-mamba-7b",
        "mamba2-2.7b": "state-spaces/mamba2-2.7b",
        "GPT2-XL": "openai-community/gpt2-xl",
        "llama3.2-1b": "meta-llama/Llama-3.2-1B",
        "mistral0.3-7b": "mistralai/Mistral-7B-v0.3",
        "smollm2-135m": "HuggingFaceTB/SmolLM2-135M",
    }
    for alias, hub_id in expected.items():
        entry = find_model(alias)
        assert entry is not None and entry.hub_id == hub_id
        assert find_model(hub_id.upper()) == entry  # hub ids resolve too, case-insensitively
    assert find_model("builtin-mamba2").is_builtin
    assert find_model("no-such-model") is None


def test_unknown_name_lists_aliases_and_forms():
    with pytest.raises(ModelLoadError) as error:
        load_model("mamba1-13om")
    message = str(error.value)
    assert "Did you mean mamba1-130m" in message
    assert "infoflow models" in message and "gpt2-xl" in message and "builtin-llama" in message
    assert ".gguf" in message and "transformers folder" in message and "hub id" in message


def test_missing_local_path():
    with pytest.raises(ModelLoadError, match="no such file or folder"):
        load_model("./no/such/folder")


def test_offline_hub_error_names_the_id_and_the_way_out(offline):
    for name, hub_id in (("mamba1-130m", "state-spaces/mamba-130m-hf"), ("someorg/some-model", "someorg/some-model")):
        with pytest.raises(ModelLoadError) as error:
            load_model(name)
        message = str(error.value)
        assert hub_id in message and "HF_HUB_OFFLINE" in message
        assert "cannot reach the Hugging Face hub" in message and "pass the folder's path" in message


@pytest.mark.parametrize("layout", ["safetensors", "sharded", "bin"])
def test_local_folder_layouts(mamba, tmp_path, layout):
    folder = save_folder(mamba, tmp_path / layout, layout)
    weights = sorted(folder.glob("*.safetensors")) if layout != "bin" else [folder / "pytorch_model.bin"]
    assert (len(weights) > 1) == (layout == "sharded")
    loaded = load_model(str(folder))
    assert isinstance(loaded.model, CausalLM) and loaded.model.family == "mamba1"
    assert loaded.name == str(folder) and loaded.source == str(folder.resolve())
    assert loaded.revision == sha256_of(weights)
    assert loaded.config.model_type == "mamba" and loaded.tokenizer.pad_token == "<eos>"
    theirs, ours = logits(mamba, loaded)
    assert (theirs - ours).abs().max().item() <= 1e-4


def test_hub_id_from_the_cache(mamba, offline):
    """A hub id found in the hub cache loads offline; the revision is the snapshot's commit."""
    repo = offline / "models--someorg--tiny-mamba"
    save_folder(mamba, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    loaded = load_model("someorg/tiny-mamba")
    assert (loaded.source, loaded.revision, loaded.name) == ("someorg/tiny-mamba", COMMIT, "someorg/tiny-mamba")
    theirs, ours = logits(mamba, loaded)
    assert (theirs - ours).abs().max().item() <= 1e-4


def test_unsupported_architecture(tmp_path):
    config = OPTConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        ffn_dim=32,
        num_attention_heads=2,
        word_embed_proj_dim=16,
    )
    folder = save_folder(OPTForCausalLM(config), tmp_path / "opt")
    with pytest.raises(ValueError, match=r"unsupported architecture 'opt'; supported model types: .*mamba"):
        load_model(str(folder))


@pytest.mark.parametrize(
    ("dtype", "expected"), [("fp32", torch.float32), ("bf16", torch.bfloat16), ("FP16", torch.float16)]
)
def test_dtype_strings(mamba, tmp_path_factory, dtype, expected):
    folder = save_folder(mamba, tmp_path_factory.mktemp("dtype"))
    loaded = load_model(str(folder), dtype=dtype)
    assert {p.dtype for p in loaded.model.parameters()} == {expected}


def test_bad_arguments(mamba, tmp_path):
    folder = save_folder(mamba, tmp_path / "model")
    with pytest.raises(ValueError, match="unsupported dtype 'int8'"):
        load_model(str(folder), dtype="int8")
    with pytest.raises(ValueError, match="unsupported device 'tpu'"):
        load_model(str(folder), device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            load_model(str(folder), device="cuda:1")
    with pytest.raises(ValueError, match="applies to hub models only"):
        load_model(str(folder), revision="main")
    with pytest.raises(ModelLoadError, match=r"not a \.gguf file"):
        load_model(str(folder / "config.json"))
    with pytest.raises(ModelLoadError, match="not a model folder"):
        load_model(str(tmp_path))


def test_tokenizer_missing_or_replaced(mamba, tmp_path):
    folder = tmp_path / "no-tokenizer"
    mamba.save_pretrained(folder)
    with pytest.raises(ModelLoadError, match="tokenizer="):
        load_model(str(folder))
    save_tokenizer(tmp_path / "tokenizer")
    loaded = load_model(str(folder), tokenizer=str(tmp_path / "tokenizer"))
    assert loaded.tokenizer(PROMPT).input_ids == [2, 3, 4, 5, 6]
    assert load_model(str(folder), tokenizer=loaded.tokenizer).tokenizer is loaded.tokenizer


def test_state_spaces_folder(mamba, tmp_path, offline):
    """An original mamba_ssm folder: no model_type, mamba_ssm names, GPT-NeoX tokenizer from the hub cache."""
    folder = tmp_path / "state-spaces"
    folder.mkdir()
    config = mamba.config
    raw = {"d_model": 16, "n_layer": 2, "vocab_size": len(VOCAB), "pad_vocab_size_multiple": 1}
    raw["ssm_cfg"] = {"d_state": config.state_size, "dt_rank": config.time_step_rank}
    (folder / "config.json").write_text(json.dumps(raw))
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in mamba.state_dict().items()}
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="EleutherAI/gpt-neox-20b"):
        load_model(str(folder))  # offline, and nothing in the test's hub cache
    save_tokenizer(tmp_path / "tokenizer")
    loaded = load_model(str(folder), tokenizer=str(tmp_path / "tokenizer"))
    assert loaded.revision == sha256_of([folder / "pytorch_model.bin"])
    theirs, ours = logits(mamba, loaded)
    assert (theirs - ours).abs().max().item() <= 1e-4


def test_builtin_models(mamba, tmp_path, monkeypatch):
    monkeypatch.setattr(load_module, "BUILTIN_DIR", tmp_path)
    with pytest.raises(ModelLoadError, match="built-in model 'builtin-mamba1' is not shipped"):
        load_model("builtin-mamba1")
    save_folder(mamba, tmp_path / "mamba1")
    loaded = load_model("Builtin-Mamba1")
    assert loaded.name == "Builtin-Mamba1" and loaded.source == str(tmp_path / "mamba1")
