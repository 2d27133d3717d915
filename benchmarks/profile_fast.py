"""Where the fast engine's time goes: torch.profiler over one clean batch of the info-flow or heatmap sweep.

Prints the tail-pass batch sizes used, then the operators that took the most device (or CPU) time.

    python -m benchmarks.profile_fast --shape mamba1-1.4b --prompts 64 --device cuda
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.info_flow_sweep import sweep_knockouts
from benchmarks.shapes import SHAPES
from infoflow.knockout.fast import CleanRun, FastEngine, Tail
from infoflow.knockout.spec import KnockoutMode
from infoflow.models.random_init import random_model


class CountingEngine(FastEngine):
    """The fast engine, recording the rows of each tail pass."""

    batches: list[int]

    def run_tails(
        self, clean: CleanRun, tails: Sequence[Tail], start: int, mode: KnockoutMode, strict: bool
    ) -> torch.Tensor:
        self.batches.append(len(tails))
        return super().run_tails(clean, tails, start, mode, strict)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mamba1-130m")
    parser.add_argument("--sweep", choices=["info-flow", "heatmap"], default="info-flow")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=12)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--max-batch", type=int, default=None)
    parser.add_argument("--rows", type=int, default=25, help="operators listed")
    args = parser.parse_args()

    device = torch.device(args.device)
    model = random_model(SHAPES[args.shape](), dtype=getattr(torch, args.dtype), device=device)
    generator = torch.Generator().manual_seed(0)
    vocab = model.lm_head.out_features
    prompts = [torch.randint(0, vocab, (args.tokens,), generator=generator) for _ in range(args.prompts)]
    knockouts = sweep_knockouts(args.tokens, model.n_layers, 9, args.sweep)
    engine = CountingEngine(model, max_batch=args.max_batch, max_prompts=args.prompts)
    requests = [(p, 0, [None, *knockouts]) for p in prompts]
    engine.batches = []
    engine.scores_many(requests)  # warm-up
    engine.batches = []
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        engine.scores_many(requests)
        if device.type == "cuda":
            torch.cuda.synchronize()
    print(f"tail passes: {len(engine.batches)}, rows: {engine.batches}")
    table = profiler.key_averages()
    for sort_by in ["self_cpu_time_total"] + (["self_cuda_time_total"] if device.type == "cuda" else []):
        print(table.table(sort_by=sort_by, row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
