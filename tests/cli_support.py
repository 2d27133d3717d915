"""What the command-line tests share: a small CSV of synthetic facts, the CLI runner, wide consoles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import Result
from rich.console import Console
from typer.testing import CliRunner

from infoflow import cli
from infoflow.data import load_dataset

MODEL = "builtin-gpt2"
SYNTHETIC_IDS = (0, 14, 28, 76, 101, 230)  # prompts of the CSV dataset, whose own ids are the rows 0..5
FLOW_KEYS = ["prompt_id", "target", "source", "feature_category", "window_size", "window_start"]


def write_facts_csv(folder: Path) -> Path:
    """``folder/facts.csv``: the synthetic prompts ``SYNTHETIC_IDS`` with prompt, subject and target columns."""
    by_id = {p.prompt_id: p for p in load_dataset("synthetic")}
    rows = [{"prompt": by_id[i].prompt, "subject": by_id[i].subject, "target": by_id[i].target} for i in SYNTHETIC_IDS]
    path = folder / "facts.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def invoke(*args: Any, code: int = 0, stdin: str | None = None) -> Result:
    """``infoflow ARGS`` in this process; fails with the output (and the exception) unless it exits ``code``."""
    result = CliRunner().invoke(cli.app, [str(a) for a in args], input=stdin)
    if result.exit_code != code:
        raise AssertionError(f"exit {result.exit_code} (expected {code}) for {args}:\n{result.output}") from (
            result.exception if result.exit_code not in (0, 1, 2, 130) else None
        )
    return result


def wide_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consoles 400 columns wide, so that no message is wrapped."""
    monkeypatch.setattr(cli, "console", Console(stderr=True, width=400))
    monkeypatch.setattr(cli, "out", Console(width=400))


def assert_rows_match(rows: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal rows up to fp32 noise: runs that batch prompts differently (chunk sizes, Ray workers, thread
    counts) sum in another order (engine contract 1e-5, observed ~1e-7); diff = (p - p0) / p0 * 100 is in
    percent, so its noise is 100 / p0 times larger. Columns without numbers must be equal."""
    noise = {"diff": 1e-4 / expected["p0"].min()} if "p0" in expected else {}
    for column in expected.columns:
        pd.testing.assert_series_equal(
            rows[column], expected[column], check_exact=False, rtol=1e-5, atol=noise.get(column, 1e-6)
        )
