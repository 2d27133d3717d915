"""The help texts of --mode and --strict name exactly the mixers that take each mode, as the mixers declare."""

from __future__ import annotations

import inspect
import re

import pytest

from infoflow.models.base import TokenMixer
from infoflow.models.families import FAMILIES
from infoflow.models.modes import KIND_NAMES, MODE_KINDS, STRICT_KINDS, KnockoutMode, MixerKind, mode_help
from tests.cli_support import invoke


def mixer_classes() -> list[type[TokenMixer]]:
    """Every concrete token mixer of every family (importing the families defines them)."""
    for family in FAMILIES:
        family.module  # noqa: B018 (the import registers the family's mixers as subclasses)
    found, todo = [], [TokenMixer]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if not inspect.isabstract(cls):
            found.append(cls)
    return found


def test_every_kind_has_a_mixer_and_a_name() -> None:
    classes = mixer_classes()
    assert {cls.kind for cls in classes} == set(MixerKind)
    assert set(KIND_NAMES) == set(MixerKind)


def test_the_mode_tables_match_what_each_mixer_declares() -> None:
    for cls in mixer_classes():
        assert KnockoutMode.ZERO_ATTENTION in cls.knockout_modes, cls
        for mode in set(KnockoutMode) - {KnockoutMode.ZERO_ATTENTION}:
            assert (mode in cls.knockout_modes) == (cls.kind in MODE_KINDS[mode]), (cls, mode)
        assert cls.supports_strict == (cls.kind in STRICT_KINDS), cls


def test_mode_help_names_each_mode_with_the_mixers_that_take_it() -> None:
    text = mode_help()
    for mode, kinds in MODE_KINDS.items():
        listed = re.search(rf"{mode.value} \(([^)]*)\)", text)
        assert listed is not None, mode
        assert listed.group(1) == ", ".join(KIND_NAMES[kind] for kind in kinds)
    assert "zero-attention (every mixer)" in text


def test_the_knockout_commands_show_the_generic_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # one line an option: no phrase is wrapped
    for command in ("info-flow", "heatmap"):
        output = " ".join(invoke(command, "--help").output.split())
        assert "Mamba knockout mode" not in output
        assert "numerator-only (RWKV, mLSTM)" in output
        assert "write-and-erase (Gated DeltaNet)" in output
