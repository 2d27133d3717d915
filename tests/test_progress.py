"""Progress of a run: a rich bar on a terminal, plain periodic lines on stderr elsewhere (logs, pipes, batch
jobs), nothing with --quiet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress

from infoflow.experiments import progress
from infoflow.experiments.progress import LogProgress, progress_bar
from tests.cli_support import MODEL, invoke, wide_consoles, write_facts_csv


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_log_lines_every_interval_with_rate_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    with LogProgress(every=30, clock=clock) as bar:
        task = bar.add_task("info_flow builtin-gpt2", total=100, completed=20)  # 20 done before: resumed
        for _ in range(8):  # 10 prompts every 10 s
            clock.now += 10
            bar.advance(task, 10)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "info_flow builtin-gpt2: 20/100 prompts (20%), 0:00:00 elapsed",
        "info_flow builtin-gpt2: 50/100 prompts (50%), 0:00:30 elapsed, 1 prompts/s, eta 0:00:50",
        "info_flow builtin-gpt2: 80/100 prompts (80%), 0:01:00 elapsed, 1 prompts/s, eta 0:00:20",
        "info_flow builtin-gpt2: 100/100 prompts (100%), 0:01:20 elapsed, 1 prompts/s, eta 0:00:00",
    ]


def test_terminal_gets_the_rich_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "Console", lambda stderr: Console(stderr=stderr, force_terminal=True))
    bar = progress_bar(True)
    assert isinstance(bar, Progress) and not bar.disable
    monkeypatch.setattr(progress, "Console", lambda stderr: Console(stderr=stderr, force_terminal=False))
    assert isinstance(progress_bar(True), LogProgress)
    quiet = progress_bar(False)
    assert isinstance(quiet, Progress) and quiet.disable


def test_a_command_logs_progress_when_not_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wide_consoles(monkeypatch)
    dataset = write_facts_csv(tmp_path)
    args = ["evaluate", "-m", MODEL, "-d", dataset, "--store", tmp_path / "r.duckdb", "--filter", "ids(0, 1, 2)"]
    output = invoke(*args).output
    assert f"evaluate {MODEL}: 0/3 prompts (0%), 0:00:00 elapsed" in output
    assert f"evaluate {MODEL}: 3/3 prompts (100%)" in output and "prompts/s, eta 0:00:00" in output
    assert "prompts (" not in invoke(*args, "-q").output


def test_progress_lines_reach_a_log_file(tmp_path: Path) -> None:
    """A real process whose stderr is a file (as under nohup or a batch scheduler) writes its lines there."""
    log = tmp_path / "run.log"
    code = (
        "from infoflow.experiments.progress import progress_bar\n"
        "with progress_bar(True) as bar:\n"
        "    task = bar.add_task('heatmap m', total=2)\n"
        "    bar.advance(task, 2)\n"
    )
    with log.open("w") as stderr:
        subprocess.run([sys.executable, "-c", code], stderr=stderr, check=True, timeout=60)
    assert log.read_text().splitlines()[0] == "heatmap m: 0/2 prompts (0%), 0:00:00 elapsed"
    assert log.read_text().splitlines()[1].startswith("heatmap m: 2/2 prompts (100%)")
