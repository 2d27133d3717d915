"""The command line answers without torch: help, version, models, runs and every argument error run in a fresh
interpreter, and after each of them neither torch nor transformers has been imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infoflow.store import Manifest, ResultsStore

# Runs each argument list through the command line in one fresh interpreter; after each, one JSON line: the exit
# code, the output, and which of torch and transformers are imported by then.
PROBE = """
import json, sys
from typer.testing import CliRunner
from infoflow.cli import app

for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(app, args)
    heavy = sorted({"torch", "transformers"} & set(sys.modules))
    print(json.dumps({"args": args, "code": result.exit_code, "output": result.output, "heavy": heavy}))
"""


def probe(*commands: list[str]) -> list[dict]:
    """The probe's record of each command, in order."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(commands)], capture_output=True, text=True, check=True, timeout=120
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def flow_rows(n_layers: int) -> list[dict]:
    """Info-flow rows of two prompts (subject source, window size 2)."""
    return [
        {"prompt_id": prompt, "target": "last", "source": "subject", "feature_category": "all", "window_size": 2,
         "window_start": start, "p": 0.3, "diff": -40.0, "hit": False, "p0": 0.5}
        for prompt in (0, 1)
        for start in range(n_layers - 1)  # 3 windows
    ]  # fmt: skip


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store with one complete info-flow run (written directly, without a model)."""
    path = tmp_path_factory.mktemp("store") / "results.duckdb"
    manifest = Manifest(kind="info_flow", model_id="builtin-gpt2", model_revision="r", dataset="synthetic",
                        params={"n_layers": 4})  # fmt: skip
    with ResultsStore.open(path) as store:
        run_id = store.start_run(manifest).run_id
        store.add_rows(run_id, flow_rows(4), done=[0, 1])
        store.finish_run(run_id)
    return path, run_id


def test_commands_and_argument_errors_answer_without_torch(stored_run: tuple[Path, str]) -> None:
    store, run_id = stored_run
    records = probe(
        ["--help"],
        ["--version"],
        ["models"],
        ["info-flow", "--help"],
        ["runs", "list", "--store", str(store)],
        ["runs", "show", run_id, "--store", str(store)],
        ["evaluate", "-m", "mamba-13"],  # a typo: neither an alias, a path nor a hub id
        ["heatmap", "-m", "./no/such/folder"],
        ["info-flow", "--filter", "correct andd top(3)"],  # a typo in the filter: found before any evaluation
        ["evaluate", "--device", "gpu"],
        ["info-flow", "--dtype", "float64"],
        ["heatmap", "--engine", "slow"],
        ["attention", "--engine", "fast"],  # attention runs the reference engine only
        ["evaluate", "--threads", "0"],
        ["figures", "-m", "builtin-gpt2", "-m", "gtp2"],
        ["demo", "-n", "0"],
    )
    assert [r["heavy"] for r in records] == [[]] * len(records), [r["args"] for r in records if r["heavy"]]
    codes = [r["code"] for r in records]
    assert codes == [0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 1, 2]
    output = {" ".join(r["args"][:2]): r["output"] for r in records}
    assert output["--version"].startswith("infoflow ")
    assert "builtin-mamba1" in output["models"] and "smollm2-135m" in output["models"]
    assert (
        run_id[:8] in output["runs list"]  # lists show 8 digits: any unique prefix addresses a run
        and run_id in output["runs show"]
        and "6 rows, 0 prompts with errors" in output["runs show"]
    )
    assert "Did you mean mamba2-130m, mamba2-1.3b, mamba1-130m?" in output["evaluate -m"]
    assert len(output["evaluate -m"].splitlines()) == 1 and output["evaluate -m"].startswith("error: unknown model")
    assert output["heatmap -m"].strip() == "error: no such file or folder: ./no/such/folder"
    assert "Did you mean gpt2" in output["figures -m"]
    assert output["info-flow --filter"].strip() == "error: unexpected 'andd' in filter 'correct andd top(3)'"
    for args, name in (("evaluate --device", "--device"), ("info-flow --dtype", "--dtype"),
                       ("heatmap --engine", "--engine"), ("evaluate --threads", "--threads")):  # fmt: skip
        assert f"Invalid value for '{name}'" in output[args]
    assert "No such option: --engine" in output["attention --engine"]


def test_report_and_plot_answer_without_torch(stored_run: tuple[Path, str], tmp_path: Path) -> None:
    store, run_id = stored_run
    records = probe(
        ["report", run_id, "--store", str(store), "-o", str(tmp_path / "report.html")],
        ["plot", run_id, "--store", str(store), "-o", str(tmp_path / "figures")],
    )
    assert [r["code"] for r in records] == [0, 0]
    assert [r["heavy"] for r in records] == [[], []]
