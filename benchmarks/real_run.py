"""What a user's real info-flow run costs, phase by phase, next to the engine alone on uniform prompts.

A random-weight model of a real shape is saved as a local folder (config, safetensors, and a byte-level BPE
tokenizer trained on the dataset's own prompts, so prompt lengths vary as in the dataset); N prompts of a
real dataset (CounterFact or known_1000, from a local file) are written to a CSV. Then, side by side in one
run:

- ``infoflow --help`` (start-up) and the real command ``infoflow info-flow --model DIR -d FILE --filter all
  -n N`` in a subprocess, wall clock;
- the same run in-process, phase by phase: model load, dataset + selection, the sweep (with the time of its
  engine calls and of planning its chunks and predicting their memory), the store writes;
- the engine alone (``FastEngine.scores_many``) on what the run handed it, in one call, and on N uniform prompts
  of the dataset's mean length.

    python -m benchmarks.real_run --shape mamba1-1.4b --prompts 1000 --data ../shared/data/counterfact.parquet
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.console import Console
from rich.table import Table
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from benchmarks.info_flow_sweep import sweep_knockouts
from benchmarks.shapes import SHAPES
from infoflow.data import load_dataset
from infoflow.engines.fast import FastEngine
from infoflow.experiments import runner
from infoflow.experiments.info_flow import InfoFlowParams, info_flow
from infoflow.experiments.runner import RunContext
from infoflow.experiments.selection import choose
from infoflow.models import load_model
from infoflow.store import ResultsStore

BOS = "<|endoftext|>"


def fact_table(data: Path) -> pd.DataFrame:
    """The rows (prompt, subject, target) of a CounterFact parquet or a known_1000 JSON file."""
    if data.suffix == ".parquet":
        frame = pd.read_parquet(data).rename(columns={"target_true": "target"})
    else:
        frame = pd.read_json(data).rename(columns={"attribute": "target"})
        frame["target"] = " " + frame["target"].str.strip()
    return frame[["prompt", "subject", "target"]].drop_duplicates("prompt").reset_index(drop=True)


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on ``texts`` with BOS prepended (token lengths like a real LM's on these prompts)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[BOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=BOS, pad_token=BOS)


def save_model_folder(shape: str, folder: Path, tokenizer: PreTrainedTokenizerFast, device: str) -> None:
    """transformers' class of ``shape`` with its own random init (on ``device`` for speed), saved as a folder."""
    config = SHAPES[shape]()
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model


def timed(function, *args, **kwargs):
    begin = time.perf_counter()
    result = function(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - begin


def stopwatch(seconds: dict[str, float], name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, adding the wall time of each call to ``seconds[name]``."""

    def timed_call(*args: Any, **kwargs: Any) -> Any:
        begin = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - begin

    return timed_call


def command_seconds(arguments: list[str]) -> float:
    begin = time.perf_counter()
    command = [sys.executable, "-c", "from infoflow.cli import app; app()", *arguments]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mamba1-130m")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--data", type=Path, required=True, help="counterfact.parquet or known_1000.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--window-size", type=int, default=9)
    parser.add_argument("--vocab", type=int, default=8192, help="size of the BPE tokenizer trained on the prompts")
    parser.add_argument("--skip-command", action="store_true", help="do not time the subprocess command")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="infoflow-bench-"))
    every_fact = fact_table(args.data)
    facts = every_fact.sample(n=min(args.prompts, len(every_fact)), random_state=0)
    facts.to_csv(work / "facts.csv", index=False)
    tokenizer = train_tokenizer((every_fact["prompt"] + every_fact["target"]).tolist(), args.vocab)
    _, build_seconds = timed(save_model_folder, args.shape, work / "model", tokenizer, args.device)
    options = ["--filter", "all", "-n", str(args.prompts), "-w", str(args.window_size)]
    options += ["--device", args.device, "--dtype", args.dtype]

    rows: list[tuple[str, float]] = []
    if not args.skip_command:
        rows.append(("start-up (infoflow --help)", command_seconds(["--help"])))
        store = str(work / "command.duckdb")
        wall = command_seconds(["info-flow", "--model", str(work / "model"), "-d", str(work / "facts.csv"), *options,
                                "--store", store, "--quiet"])  # fmt: skip
        rows.append(("command end to end (subprocess)", wall))

    dtype = getattr(torch, args.dtype)
    loaded, load_seconds = timed(load_model, str(work / "model"), device=args.device, dtype=dtype)
    engine = FastEngine(loaded.model)
    watch: dict[str, float] = defaultdict(float)  # seconds spent inside the wrapped calls of the run
    real_requests: list = []  # what the run handed the engine, to time the engine alone on them
    scores_many, memory_check = engine.scores_many, runner.memory_check

    def recorded_scores_many(requests):
        real_requests.extend(requests)
        return scores_many(requests)

    with ResultsStore.open(work / "in-process.duckdb") as store:
        store.add_rows = stopwatch(watch, "store", store.add_rows)  # type: ignore[method-assign]
        engine.scores_many = stopwatch(watch, "engine", recorded_scores_many)  # type: ignore[method-assign]
        runner.memory_check = stopwatch(watch, "memory", memory_check)
        context = RunContext(loaded, engine, store, dataset=str(work / "facts.csv"), show_progress=False)
        prompts, select_seconds = timed(lambda: choose(context, load_dataset(work / "facts.csv"), "all").prompts)
        params = InfoFlowParams(window_sizes=(args.window_size,))
        try:
            _, run_seconds = timed(info_flow, context, prompts, params)
        finally:
            del engine.scores_many
            runner.memory_check = memory_check
    store_seconds = watch["store"]
    lengths = [len(tokenizer(p)["input_ids"]) for p in facts["prompt"]]
    mean_length = round(sum(lengths) / len(lengths))
    rows += [
        ("in-process: model load", load_seconds),
        ("in-process: dataset + selection", select_seconds),
        ("in-process: sweep (run minus store writes)", run_seconds - store_seconds),
        ("  of which in the engine (its calls, one per chunk)", watch["engine"]),
        ("  of which planning the chunks and predicting their memory", watch["memory"]),
        ("in-process: store writes", store_seconds),
    ]
    with torch.no_grad():  # the engine alone on what the run handed it (prompts of every length), in one call
        _, real_seconds = timed(engine.scores_many, real_requests)
    rows.append((f"engine alone, the same {len(real_requests)} prompts in one call", real_seconds))

    # the engine alone, on uniform prompts of the mean length, with the same knockouts per prompt
    vocab = loaded.model.lm_head.out_features
    generator = torch.Generator().manual_seed(0)
    uniform = [torch.randint(0, vocab, (mean_length,), generator=generator) for _ in range(len(prompts))]
    knockouts = sweep_knockouts(mean_length, loaded.model.n_layers, args.window_size)
    requests = [(p, 0, [None, *knockouts]) for p in uniform]
    with torch.no_grad():
        engine.scores_many(requests[:8])  # warm-up
        _, engine_seconds = timed(engine.scores_many, requests)
    sweep_seconds = run_seconds - store_seconds
    rows.append((f"engine alone, {len(uniform)} uniform prompts of {mean_length} tokens", engine_seconds))

    table = Table(
        title=f"{args.shape}, {len(prompts)} prompts of {args.data.name} (lengths {min(lengths)}-{max(lengths)}, "
        f"mean {sum(lengths) / len(lengths):.1f}), ws {args.window_size}, {len(knockouts)} knockouts/prompt, "
        f"{args.device} {args.dtype}"
    )
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    for name, seconds in rows:
        table.add_row(name, f"{seconds:.2f}")
    Console(width=120).print(table)
    print(f"model folder built in {build_seconds:.1f} s (not part of any phase)")
    print(f"sweep phase / engine alone on uniform prompts: {sweep_seconds / engine_seconds:.2f}x")
    if os.environ.get("INFOFLOW_BENCH_KEEP") is None:
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
