"""The one front door for loading a model: a name, a local path or a hub id -> our model and its tokenizer.

Resolution of ``name_or_path``, in order:

1. a built-in model (``builtin-mamba1``, ...): the folder shipped in the package;
2. a name from the registry (``mamba1-130m``, ``gpt2-xl``, ...; case-insensitive): its hub id;
3. an existing local path: a ``.gguf`` file, a transformers folder (``config.json`` with ``model_type``)
   or an original state-spaces (mamba_ssm) folder;
4. a hub id ``org/name``: config, tokenizer and weights (safetensors if the repo has them, else ``.bin``)
   downloaded into the hub cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from infoflow.errors import with_cli_message
from infoflow.models import state_spaces
from infoflow.models.base import CausalLM
from infoflow.models.families import family_for
from infoflow.models.gguf import load_gguf, load_gguf_tokenizer
from infoflow.models.loading import ModelLoadError, load_hf_folder, weight_files
from infoflow.models.registry import (
    ACCEPTED_FORMS,
    BUILTIN_DIR,
    HUB_ID,
    ModelEntry,
    builtin_name,
    check_model_name,
    find_model,
)

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}

CONFIG_AND_TOKENIZER_FILES = [
    "config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
]
SAFETENSORS_FILES = ["model*.safetensors", "model.safetensors.index.json"]
BIN_FILES = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
PASS_A_FOLDER = "pass the folder's path instead of the id"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")

TokenizerChoice = str | PreTrainedTokenizerBase | None


@dataclass
class LoadedModel:
    """A model ready for experiments, and where it came from (for run manifests)."""

    model: CausalLM
    tokenizer: PreTrainedTokenizerBase
    name: str  # as asked
    source: str  # the hub id, or the resolved local path
    revision: str  # the hub commit hash, or the sha256 of the local weight file(s)
    config: PretrainedConfig


def load_model(
    name_or_path: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    revision: str | None = None,
    tokenizer: TokenizerChoice = None,
) -> LoadedModel:
    """Load a model by registry name, built-in name, local path or hub id (see the module docstring).

    ``revision`` (branch, tag or commit) applies to hub models only. ``tokenizer`` replaces the model's own:
    a tokenizer object, a local folder or a hub id.
    """
    torch_dtype, torch_device = parse_dtype(dtype), parse_device(device)
    entry = find_model(name_or_path)
    if entry is not None and entry.is_builtin:
        reject_revision(revision, name_or_path)
        return load_local(name_or_path, builtin_folder(entry), torch_dtype, torch_device, tokenizer)
    if entry is not None:
        assert entry.hub_id is not None
        return load_from_hub(name_or_path, entry.hub_id, revision, torch_dtype, torch_device, tokenizer)
    path = Path(name_or_path).expanduser()
    if path.exists():
        reject_revision(revision, name_or_path)
        return load_local(name_or_path, path.resolve(), torch_dtype, torch_device, tokenizer)
    try:
        check_model_name(name_or_path)  # what is left must look like a hub id
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
    return load_from_hub(name_or_path, name_or_path, revision, torch_dtype, torch_device, tokenizer)


def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise ValueError(f"unsupported dtype {dtype!r}; use one of {', '.join(DTYPES)} (or the torch dtype)")


def parse_device(device: str | torch.device) -> torch.device:
    try:
        parsed = torch.device(device)
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            no_gpu = f"device {device!r} asked for, but no CUDA GPU is available here"
            raise with_cli_message(ValueError(f"{no_gpu}; use device='cpu'"), f"{no_gpu}; use --device cpu")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"device {device!r} asked for, but this machine has {count} CUDA GPU(s)")
    return parsed


def reject_revision(revision: str | None, name: str) -> None:
    if revision is not None:
        raise ValueError(f"revision={revision!r} applies to hub models only, not to the local model {name!r}")


def builtin_folder(entry: ModelEntry) -> Path:
    folder = BUILTIN_DIR / builtin_name(entry)
    if not (folder / "config.json").exists():
        raise ModelLoadError(
            f"the built-in model {entry.alias!r} is not shipped in this installation (no weights at {folder}); "
            f"train it with `python -m infoflow.builtin.train --family {builtin_name(entry)} --out {folder}` "
            "(minutes on a GPU), install an infoflow release that includes it, or pick another model from "
            "`infoflow models`"
        )
    return folder


def load_local(
    name: str, path: Path, dtype: torch.dtype, device: torch.device, tokenizer: TokenizerChoice
) -> LoadedModel:
    model, tok, config = load_files(path, dtype, device, tokenizer)
    revision = sha256_of([path] if path.is_file() else weight_files(path))
    return LoadedModel(model, tok, name, str(path), revision, config)


def load_files(
    path: Path, dtype: torch.dtype, device: torch.device, tokenizer: TokenizerChoice
) -> tuple[CausalLM, PreTrainedTokenizerBase, PretrainedConfig]:
    """A ``.gguf`` file, a transformers folder or a state-spaces folder; the tokenizer is loaded first."""
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(f"{path} is a file but not a .gguf file; {ACCEPTED_FORMS}")
        tok = pick_tokenizer(tokenizer, lambda: load_gguf_tokenizer(path))
        model, config = load_gguf(path, dtype=dtype, device=device)
    elif state_spaces.is_state_spaces_folder(path):
        tok = pick_tokenizer(tokenizer, lambda: load_tokenizer(state_spaces.STATE_SPACES_TOKENIZER))
        model, config = state_spaces.load_state_spaces_folder(path, dtype=dtype, device=device)
    elif (model_type := read_model_type(path)) is not None:  # a config.json that is not JSON raises here
        family_for(model_type)  # an unsupported architecture fails before any weight is read
        tok = pick_tokenizer(tokenizer, lambda: load_tokenizer(str(path)))
        model, config = load_hf_folder(path, dtype=dtype, device=device)
    else:
        raise ModelLoadError(f"{path} is not a model folder; {ACCEPTED_FORMS}")
    return model, with_pad_token(tok), config


def load_from_hub(
    name: str,
    hub_id: str,
    revision: str | None,
    dtype: torch.dtype,
    device: torch.device,
    tokenizer: TokenizerChoice,
) -> LoadedModel:
    """Download ``hub_id`` into the hub cache (or find it there), then load the snapshot folder."""
    folder = snapshot(hub_id, revision, CONFIG_AND_TOKENIZER_FILES)
    commit = folder.name  # the cache names snapshot folders by commit hash
    model_type = read_model_type(folder)
    if model_type is not None:
        family_for(model_type)  # an unsupported architecture fails before any weight is downloaded
    snapshot(hub_id, commit, SAFETENSORS_FILES)
    if not any(folder.glob("model*.safetensors")):
        snapshot(hub_id, commit, BIN_FILES)
    model, tok, config = load_files(folder, dtype, device, tokenizer)
    return LoadedModel(model, tok, name, hub_id, commit, config)


def snapshot(hub_id: str, revision: str | None, patterns: list[str], advice: str = PASS_A_FOLDER) -> Path:
    """The hub-cache snapshot folder of ``hub_id`` holding at least the files matching ``patterns``.

    ``advice`` ends the error raised when the hub is out of reach and the cache lacks the files.
    """
    try:
        try:
            return Path(snapshot_download(hub_id, revision=revision, allow_patterns=patterns))
        except (OfflineModeIsEnabled, httpx.TransportError):  # the hub is out of reach: the cache alone decides
            return Path(snapshot_download(hub_id, revision=revision, allow_patterns=patterns, local_files_only=True))
    except GatedRepoError as error:
        raise ModelLoadError(
            f"{hub_id!r} is gated: accept its license at https://huggingface.co/{hub_id}, then set HF_TOKEN "
            "to an access token of that account"
        ) from error
    except RepositoryNotFoundError as error:
        raise ModelLoadError(
            f"no model {hub_id!r} on the Hugging Face hub (if it is private, set HF_TOKEN); "
            f"see `infoflow models` for the known names"
        ) from error
    except RevisionNotFoundError as error:
        raise ModelLoadError(f"{hub_id!r} has no revision {revision!r} on the hub") from error
    except LocalEntryNotFoundError as error:
        raise ModelLoadError(offline_message(hub_id, advice)) from error


def offline_message(hub_id: str, advice: str) -> str:
    reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "no network connection to huggingface.co"
    return (
        f"cannot download {hub_id!r}: this machine cannot reach the Hugging Face hub ({reason}) and it is not "
        f"in the local hub cache ({constants.HF_HUB_CACHE}). Download it where there is network access "
        f"(`hf download {hub_id} --local-dir <folder>`), copy the folder here and {advice}"
    )


def read_model_type(folder: Path) -> str | None:
    """``model_type`` of ``folder/config.json`` (a transformers folder), or None where there is no such file;
    a ``ModelLoadError`` where it is not JSON (a partial download)."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"{path} is not valid JSON ({error}): the file is truncated or damaged; download or copy it again"
        ) from None
    return config.get("model_type") if isinstance(config, dict) else None


def pick_tokenizer(choice: TokenizerChoice, default: Callable[[], PreTrainedTokenizerBase]) -> PreTrainedTokenizerBase:
    if isinstance(choice, PreTrainedTokenizerBase):
        return choice
    return load_tokenizer(choice) if choice is not None else default()


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """AutoTokenizer from a local folder, or from a hub id's snapshot (downloaded or in the hub cache)."""
    advice = "pass tokenizer=<a local folder with tokenizer files, e.g. tokenizer.json>"
    folder = Path(source).expanduser()
    if not folder.is_dir():
        if not HUB_ID.fullmatch(source):
            raise ModelLoadError(f"tokenizer {source!r} is neither a local folder nor a hub id (org/name)")
        folder = snapshot(source, None, CONFIG_AND_TOKENIZER_FILES, advice=advice)
    if not any((folder / name).exists() for name in TOKENIZER_FILES):
        # AutoTokenizer would silently build an empty tokenizer for the config's model type
        raise ModelLoadError(f"no tokenizer in {folder} (none of {', '.join(TOKENIZER_FILES)}); {advice}")
    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load the tokenizer in {folder}: {error}; {advice}") from error


def with_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Pad with the end-of-text token where the tokenizer has no pad token (as the reference does; in place)."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def sha256_of(paths: list[Path]) -> str:
    """sha256 of the files' bytes, concatenated in order (of the file itself for one file)."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as file:
            while chunk := file.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()
