"""Faults and expected failures: each is one ``error:`` line that names the fix in the command line's terms, exit
code 1, no traceback (``--debug`` shows it), and nothing stored is lost or duplicated. A full disk is a file-size
limit (RLIMIT_FSIZE: the write fails as on a full disk, without root); a read-only folder is a read-only tmpfs
where this process may mount one, else a folder without write permission (not read-only to root)."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from infoflow.cli import app
from infoflow.data import known_1000
from infoflow.models.load import BUILTIN_DIR
from infoflow.store import ResultsStore
from tests.cli_support import assert_rows_match

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}


def one_error_line(args: list[str | Path], *fragments: str, debug: bool = False) -> str:
    """Run ``infoflow ARGS``: exit 1, exactly one ``error:`` line containing ``fragments``, no traceback."""
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def model_copy(folder: Path) -> Path:
    copy = folder / "model"
    shutil.copytree(BUILTIN_DIR / "gpt2", copy)
    return copy


def evaluate_args(model: Path | str, store: Path) -> list[str | Path]:
    return ["evaluate", "-m", model, "-n", "2", "--store", store, "-q"]


# --- the model's files ---


def test_truncated_weights(tmp_path: Path) -> None:
    model = model_copy(tmp_path)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a partial download
    one_error_line(evaluate_args(model, tmp_path / "s.duckdb"), "model.safetensors", "truncated", "download")
    assert not (tmp_path / "s.duckdb").exists()  # refused before any run starts


def test_config_that_does_not_match_the_weights(tmp_path: Path) -> None:
    model = model_copy(tmp_path)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "n_embd": 64}))
    line = one_error_line(
        evaluate_args(model, tmp_path / "s.duckdb"), "do not match config.json", "[1024, 128] in the weights"
    )
    assert len(line) < 600  # not one line per tensor


def test_truncated_config(tmp_path: Path) -> None:
    model = model_copy(tmp_path)
    (model / "config.json").write_text((model / "config.json").read_text()[:100])
    one_error_line(evaluate_args(model, tmp_path / "s.duckdb"), "config.json is not valid JSON", "truncated")


# --- messages in the command line's terms ---


def test_offline_known_1000_names_dataset_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(known_1000, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(known_1000, "URL", "http://127.0.0.1:9/known_1000.json")  # nothing listens: no network
    line = one_error_line(
        ["evaluate", "-m", "builtin-gpt2", "-d", "known_1000", "--store", tmp_path / "s.duckdb"], "--dataset-file"
    )
    assert "load_dataset(" not in line


def test_missing_columns_named_in_command_line_terms(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("question,answer\nWhere?, Paris\n")
    line = one_error_line(
        ["evaluate", "-m", "builtin-gpt2", "-d", wrong, "--store", tmp_path / "s.duckdb"],
        "missing column(s) 'prompt'",
        "Rename the file's columns to prompt, subject, target",
    )
    assert "columns={" not in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_names_device_cpu(tmp_path: Path) -> None:
    line = one_error_line(["evaluate", "-m", "builtin-gpt2", "--device", "cuda", "--store", tmp_path / "s.duckdb"])
    assert "--device cpu" in line and "device='cpu'" not in line


def test_report_hint_carries_a_non_default_store(tmp_path: Path) -> None:
    store = tmp_path / "my store.duckdb"
    flow = ["info-flow", "-m", "builtin-gpt2", "-n", "2", "--filter", "all", "-w", "4", "--store", store, "-q"]
    result = CliRunner().invoke(app, [str(a) for a in flow], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    (hint,) = [line for line in result.output.splitlines() if "infoflow report" in line]
    command = shlex.split(hint.split(": ", 1)[1])  # the command as printed, as the shell reads it
    assert command[:2] == ["infoflow", "report"] and command[-2:] == ["--store", str(store)]
    report = CliRunner().invoke(app, [*command[1:], "-o", str(tmp_path / "r.html")])  # copied, it works
    assert report.exit_code == 0, report.output


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    model = model_copy(tmp_path)
    (model / "config.json").write_text("{")
    result = CliRunner().invoke(app, ["--debug", *map(str, evaluate_args(model, tmp_path / "s.duckdb"))])
    assert result.exit_code == 1 and result.exception is not None  # raised, not printed as one line
    assert "not valid JSON" in str(result.exception)


# --- read-only folders ---


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[Path]:
    """``folder``, read-only: a read-only tmpfs mounted there where this process may mount one (as root), else
    the folder without write permission (which stops any user but root)."""
    folder.mkdir()
    mounted = os.geteuid() == 0 and shutil.which("mount") is not None
    if mounted:
        command = ["mount", "-t", "tmpfs", "-o", "ro,size=16m", "tmpfs", str(folder)]
        mounted = subprocess.run(command, capture_output=True).returncode == 0
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("root without mount: no read-only folder")
        folder.chmod(0o555)
    try:
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
        else:
            folder.chmod(0o755)


def test_report_export_plot_into_a_read_only_folder(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    flow = ["info-flow", "-m", "builtin-gpt2", "-n", "2", "--filter", "all", "-w", "4", "--store", store, "-q"]
    assert CliRunner().invoke(app, [str(a) for a in flow]).exit_code == 0
    with ResultsStore.open(store, read_only=True) as results:
        (run_id,) = results.runs().query("kind == 'info_flow'")["run_id"]
        before = results.frame(run_id)
    with read_only_folder(tmp_path / "ro") as ro:
        one_error_line(["report", "--store", store, "-o", ro / "r.html"], "cannot write", "(--out)")
        one_error_line(["runs", "export", run_id, ro / "x.csv", "--store", store], "cannot write", "PATH")
        one_error_line(["runs", "export", run_id, ro / "x.parquet", "--store", store], "cannot write", "PATH")
        one_error_line(["plot", run_id, "-o", ro, "--store", store], "cannot write", "(--out)")
        one_error_line(["plot", run_id, "-o", ro / "figures", "--store", store], "cannot write", "(--out)")
        one_error_line([*flow[:-3], "--store", ro / "s.duckdb"], "cannot write", "--store")  # a run's new store
    with ResultsStore.open(store, read_only=True) as results:
        pd.testing.assert_frame_equal(results.frame(run_id), before)  # the store read from is untouched


def test_store_in_a_read_only_folder_is_read_and_not_written(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    source = tmp_path / "s.duckdb"
    flow = ["info-flow", "-m", "builtin-gpt2", "-n", "2", "--filter", "all", "-w", "4", "-q"]
    assert CliRunner().invoke(app, [*flow, "--store", str(source)]).exit_code == 0
    with read_only_folder(folder) as ro:
        if os.geteuid() == 0:  # the tmpfs is read-only: copy the store in through a writable mount over it first
            subprocess.run(["mount", "-o", "remount,rw", str(ro)], check=True)
            shutil.copy(source, ro / "s.duckdb")
            subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        else:
            ro.chmod(0o755)
            shutil.copy(source, ro / "s.duckdb")
            ro.chmod(0o555)
        listed = CliRunner().invoke(app, ["runs", "list", "--store", str(ro / "s.duckdb"), "--json"])
        assert listed.exit_code == 0, listed.output
        assert len(json.loads(listed.output)) == 1
        one_error_line([*flow, "-n", "3", "--store", ro / "s.duckdb"], "cannot write", "--store")


# --- a full disk during a run ---


def evaluate_command(store: Path) -> list[str]:
    args = ["evaluate", "--model", "builtin-gpt2", "--limit", "96", "--store", str(store), "--quiet"]
    return [sys.executable, "-c", "from infoflow.cli import main; main()", *args]


@pytest.mark.slow
def test_full_disk_during_a_run_loses_nothing(tmp_path: Path) -> None:
    """Files may grow to 45 kB only (the log of a chunk of 32 evaluated prompts takes ~16 kB, after ~5 kB of
    run): two chunks commit, the third's commit fails; the command ends with one line, and the run resumed
    without the limit equals an uninterrupted one."""

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (45_000, 45_000))

    store = tmp_path / "s.duckdb"
    full = subprocess.run(evaluate_command(store), capture_output=True, text=True, env=ENV, preexec_fn=small_disk)
    assert full.returncode == 1, full.stderr
    assert "Traceback" not in full.stderr and full.stderr.count("error:") == 1, full.stderr
    assert "cannot write to the results store" in full.stderr and "--store" in full.stderr
    with ResultsStore.open(store, read_only=True) as results:
        (run_id,) = results.runs()["run_id"]
        stored = len(results.completed_prompts(run_id))
    assert 0 < stored < 96  # the fault came mid-run
    for path in (store, tmp_path / "r.duckdb"):  # resume; an uninterrupted run
        result = CliRunner().invoke(app, evaluate_command(path)[3:])
        assert result.exit_code == 0, result.output
    frames = []
    for path in (store, tmp_path / "r.duckdb"):
        with ResultsStore.open(path, read_only=True) as results:
            (run_id,) = results.runs()["run_id"]
            assert results.run(run_id).status == "complete"
            frames.append(results.frame(run_id).sort_values("prompt_id", ignore_index=True))
    rows, expected = frames
    assert not rows["prompt_id"].duplicated().any() and len(rows) == 96
    assert_rows_match(rows, expected)
