"""The original state-spaces (mamba_ssm) checkpoint format: config translation and weights, against transformers."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM, PreTrainedModel

from infoflow.models.loading import ModelLoadError
from infoflow.models.state_spaces import is_state_spaces_folder, load_state_spaces_folder
from tests.oracle import max_logit_difference, mixer_reconstruction_error, randomize_

VOCAB = 97  # mamba_ssm pads it to a multiple of pad_vocab_size_multiple


def write_state_spaces_folder(model: PreTrainedModel, folder: Path, config: dict) -> Path:
    """Save a transformers model as mamba_ssm does: its config.json and pytorch_model.bin with mamba_ssm's names."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = {key.replace("backbone.embeddings.", "backbone.embedding."): v for key, v in model.state_dict().items()}
    torch.save(weights, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def original_config(d_model: int, pad_multiple: int, ssm_cfg: dict, **extra: object) -> dict:
    """A config.json as state-spaces/mamba2-130m ships it (mamba_ssm's MambaConfig fields)."""
    return {
        "d_model": d_model,
        "d_intermediate": 0,
        "n_layer": 2,
        "vocab_size": VOCAB,
        "ssm_cfg": ssm_cfg,
        "attn_layer_idx": [],
        "attn_cfg": {},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": pad_multiple,
        "tie_embeddings": True,
        **extra,
    }


class GroupedGatedNorm(nn.Module):
    """mamba_ssm's RMSNormGated(norm_before_gate=False, group_size): rms over each group of channels."""

    def __init__(self, weight: torch.Tensor, group_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight, self.group_size, self.eps = weight, group_size, eps

    def forward(self, hidden: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        g = (hidden * F.silu(gate)).unflatten(-1, (-1, self.group_size))
        return self.weight * (g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2)


def prompts(seq_len: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, seq_len), generator=torch.Generator().manual_seed(seq_len))


def test_mamba2_with_mamba_ssm_defaults(tmp_path):
    # ssm_cfg {"layer": "Mamba2"} alone means d_state 128, headdim 64, expand 2, ngroups 1, chunk_size 256
    hf_config = Mamba2Config(
        vocab_size=112, hidden_size=64, num_heads=2, head_dim=64, state_size=128, n_groups=1, num_hidden_layers=2
    )
    theirs = randomize_(Mamba2ForCausalLM(hf_config), seed=3)
    theirs.lm_head.weight = theirs.backbone.embeddings.weight  # mamba_ssm ties them (tie_embeddings)
    folder = write_state_spaces_folder(theirs, tmp_path / "m2", original_config(64, 16, {"layer": "Mamba2"}))
    assert is_state_spaces_folder(folder)
    ours, config = load_state_spaces_folder(folder)
    assert isinstance(config, Mamba2Config) and ours.family == "mamba2"
    assert (config.vocab_size, config.num_heads, config.head_dim, config.state_size) == (112, 2, 64, 128)
    assert (config.n_groups, config.chunk_size, config.tie_word_embeddings) == (1, 256, True)
    for seq_len in (1, 6, 13):
        assert max_logit_difference(theirs, ours, prompts(seq_len)) <= 1e-4


def test_mamba2_groups_normalise_separately(tmp_path):
    """With ngroups > 1, mamba_ssm's gated norm is per group (transformers' is over all channels)."""
    ssm_cfg = {"layer": "Mamba2", "d_state": 8, "headdim": 8, "ngroups": 2, "chunk_size": 4}
    hf_config = Mamba2Config(
        vocab_size=104, hidden_size=32, num_heads=8, head_dim=8, state_size=8, n_groups=2, num_hidden_layers=2
    )
    theirs = randomize_(Mamba2ForCausalLM(hf_config), seed=4)
    folder = write_state_spaces_folder(theirs, tmp_path / "m2g", original_config(32, 8, ssm_cfg, tie_embeddings=False))
    ours, config = load_state_spaces_folder(folder)
    assert config.chunk_size == 4 and config.tie_word_embeddings is False
    input_ids = prompts(11)
    assert max_logit_difference(theirs, ours, input_ids) > 1e-3  # transformers' norm differs for 2 groups
    for layer in theirs.backbone.layers:
        layer.mixer.norm = GroupedGatedNorm(layer.mixer.norm.weight, group_size=32)
    assert max_logit_difference(theirs, ours, input_ids) <= 1e-4
    assert mixer_reconstruction_error(ours, input_ids) <= 1e-5


def test_mamba1_original_format(tmp_path):
    hf_config = MambaConfig(vocab_size=104, hidden_size=32, state_size=8, num_hidden_layers=2, time_step_rank=2)
    theirs = randomize_(MambaForCausalLM(hf_config), seed=5)
    folder = write_state_spaces_folder(theirs, tmp_path / "m1", original_config(32, 8, {"d_state": 8, "dt_rank": 2}))
    ours, config = load_state_spaces_folder(folder)
    assert isinstance(config, MambaConfig) and ours.family == "mamba1" and config.vocab_size == 104
    for seq_len in (1, 9):
        assert max_logit_difference(theirs, ours, prompts(seq_len)) <= 1e-4


def test_recognises_only_the_original_format(tmp_path):
    Mamba2ForCausalLM(
        Mamba2Config(
            vocab_size=16, hidden_size=16, num_heads=2, head_dim=16, state_size=4, n_groups=1, num_hidden_layers=1
        )
    ).save_pretrained(tmp_path / "hf")
    assert not is_state_spaces_folder(tmp_path / "hf")
    assert not is_state_spaces_folder(tmp_path / "missing")
    with pytest.raises(ModelLoadError, match="not a state-spaces"):
        load_state_spaces_folder(tmp_path / "hf")


@pytest.mark.parametrize(
    ("change", "option"),
    [
        ({"d_intermediate": 128}, "d_intermediate"),
        ({"attn_layer_idx": [1]}, "attn_layer_idx"),
        ({"ssm_cfg": {"layer": "Mamba2", "norm_before_gate": True}}, "norm_before_gate"),
        ({"ssm_cfg": {"layer": "Mamba3"}}, "Mamba3"),
    ],
)
def test_unsupported_options_are_refused(tmp_path, change, option):
    (tmp_path / "config.json").write_text(json.dumps(original_config(64, 16, {"layer": "Mamba2"}) | change))
    with pytest.raises(ModelLoadError, match=option):
        load_state_spaces_folder(tmp_path)
