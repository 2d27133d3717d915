"""Memory: a chunk's peak memory is predicted before it runs and the prediction bounds the measured peak; a prompt
that does not fit in the memory available is recorded with its need and the run completes; a prompt the
out-of-memory killer ended while it ran alone is recorded as failed on resume instead of being run again."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infoflow.cli import app
from infoflow.data import FactPrompt, load_dataset
from infoflow.experiments import in_flight
from infoflow.experiments.runner import chunked
from infoflow.store import ResultsStore

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}


PROBES = (
    "builtin-mamba1:info_flow:500,2000",  # the long-prompt case of the issue, shorter
    "builtin-mamba2:info_flow:1000",
    "builtin-gpt2:heatmap:100",
    "builtin-mamba1:attention:20",
)


@pytest.mark.slow
def test_prediction_bounds_the_measured_peak() -> None:
    """In a process of its own, each job's predicted peak is at least the memory it added at its peak."""
    command = [sys.executable, "-m", "tests.memory_probe", *PROBES]
    probe = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert probe.returncode == 0, probe.stderr
    results = [json.loads(line) for line in probe.stdout.splitlines()]
    assert len(results) == sum(len(spec.split(":")[2].split(",")) for spec in PROBES)
    for result in results:
        assert result["measured"] <= result["predicted"], result


def long_facts(folder: Path, tokens: int) -> Path:
    """Two synthetic facts and one after ``tokens`` filler tokens, as a JSONL dataset."""
    facts = load_dataset("synthetic")[:3]
    rows = [{"prompt": f.prompt, "subject": f.subject, "target": f.target} for f in facts[:2]]
    rows.append({**rows[0], "prompt": " ".join(["the"] * tokens) + " " + facts[2].prompt, "subject": facts[2].subject,
                 "target": facts[2].target})  # fmt: skip
    path = folder / "long.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def address_space() -> int:
    """The address space (VmSize) of a fresh process that has imported torch and loaded a built-in model."""
    code = (
        "from infoflow.models import load_model; load_model('builtin-mamba1'); "
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmSize:')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True)
    return int(out.stdout.strip()) * 1024


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the address space from /proc")
def test_prompt_too_long_for_the_memory_limit_is_recorded_and_the_run_completes(tmp_path: Path) -> None:
    """Under RLIMIT_AS 1.5 GB above what the process needs to start, a 30,000-token prompt on builtin-mamba1
    (predicted ~6 GB) is recorded with its need, not run, and the two short prompts complete."""
    limit = address_space() + 3 * 2**29

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    store = tmp_path / "s.duckdb"
    args = ["info-flow", "-m", "builtin-mamba1", "-d", long_facts(tmp_path, 30_000), "--filter", "all",
            "--store", store, "-q", "--threads", "1"]  # fmt: skip
    command = [sys.executable, "-c", "from infoflow.cli import main; main()", *map(str, args)]
    run = subprocess.run(command, capture_output=True, text=True, env=ENV, preexec_fn=limited, timeout=300)
    assert run.returncode == 0, run.stderr
    with ResultsStore.open(store, read_only=True) as results:
        (run_id,) = results.runs()["run_id"]
        errors, rows = results.frame(run_id, "errors"), results.frame(run_id)
        assert results.run(run_id).status == "complete"
    assert errors["prompt_id"].tolist() == [2]
    assert errors["reason"][0].startswith("needs ~") and "GB available on cpu" in errors["reason"][0]
    assert sorted(rows["prompt_id"].unique()) == [0, 1]


VICTIM = 3  # the synthetic prompt the out-of-memory killer "ends"
KILLER = """
import os, signal, sys
from infoflow.experiments import in_flight, jobs, runner
kills = int(sys.argv[1])
in_flight.oom_kills = lambda: kills  # the machine's out-of-memory kill count, as the test sets it
knockout_job = jobs.knockout_job

def dying(context, plan_of, rows_of):  # the process dies while the victim computes, as an OOM kill ends it
    job = knockout_job(context, plan_of, rows_of)
    def run(chunk):
        if any(prompt.prompt_id == {victim} for prompt, _ in chunk):
            os.kill(os.getpid(), signal.SIGKILL)
        return job(chunk)
    return runner.SizedJob(run, job.needs, job.device)

jobs.knockout_job = dying
from infoflow.cli import main
sys.argv[1:] = sys.argv[2:]
main()
"""


def flow_args(store: Path) -> list[str]:
    ids = ",".join(str(i) for i in (0, 1, 2, VICTIM))
    return ["info-flow", "-m", "builtin-gpt2", "--filter", f"ids({ids})", "-w", "4", "--store", str(store), "-q"]


def killed_run(store: Path, oom_kills: int) -> int:
    code = KILLER.replace("{victim}", str(VICTIM))
    command = [sys.executable, "-c", code, str(oom_kills), *flow_args(store)]
    return subprocess.run(command, capture_output=True, env=ENV, timeout=300).returncode


@pytest.mark.slow
def test_prompt_killed_for_memory_is_split_then_recorded_not_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process dies (SIGKILL) while the victim's chunk of 4 computes, and the machine's out-of-memory kill count
    has grown since: the resumed run computes the 4 prompts one by one, and dies again on the victim, alone; the
    next resume records it as failed and completes the run, the 3 other prompts stored once each."""
    store = tmp_path / "s.duckdb"
    assert killed_run(store, oom_kills=0) == -9
    with ResultsStore.open(store, read_only=True) as results:
        (run_id,) = results.runs().query("kind == 'info_flow'")["run_id"]
        assert results.completed_prompts(run_id) == set()
    assert killed_run(store, oom_kills=1) == -9  # split: the prompts before the victim complete, alone
    with ResultsStore.open(store, read_only=True) as results:
        assert results.completed_prompts(run_id) == {0, 1, 2}
    monkeypatch.setattr(in_flight, "oom_kills", lambda: 2)
    result = CliRunner().invoke(app, flow_args(store))
    assert result.exit_code == 0, result.output
    with ResultsStore.open(store, read_only=True) as results:
        errors, rows = results.frame(run_id, "errors"), results.frame(run_id)
        assert results.run(run_id).status == "complete"
    assert errors["prompt_id"].tolist() == [VICTIM]
    assert "out-of-memory killer" in errors["reason"][0] and "not run again" in errors["reason"][0]
    assert sorted(rows["prompt_id"].unique()) == [0, 1, 2]
    assert not rows.duplicated(["prompt_id", "source", "window_start"]).any()


def test_a_kill_without_memory_evidence_is_run_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Marks left by a process that ended with no out-of-memory kill since (kill -9, a power cut) are resumed as
    usual: nothing is recorded as failed."""
    monkeypatch.setattr(in_flight, "oom_kills", lambda: 7)
    flight = in_flight.Flight.now(1, need=10, free=20)
    assert not flight.killed_for_memory()
    monkeypatch.setattr(in_flight, "oom_kills", lambda: 8)
    assert flight.killed_for_memory()
    monkeypatch.setattr(in_flight, "oom_kills", lambda: None)  # not Linux: no evidence, run again
    assert not flight.killed_for_memory()
    errors, alone = in_flight.landed({5: flight.to_json(), 6: "not json"})
    assert errors == {} and alone == set()


def test_chunks_put_prompts_to_run_alone_in_chunks_of_their_own() -> None:
    facts = load_dataset("synthetic")[:5]
    usable = [(FactPrompt(i, f.prompt, f.subject, f.target), None) for i, f in enumerate(facts)]
    chunks = chunked(usable, 2, alone={1, 4})  # type: ignore[arg-type]
    assert [[p.prompt_id for p, _ in chunk] for chunk in chunks] == [[0, 2], [3], [1], [4]]
