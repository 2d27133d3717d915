"""Where the fast engine's time goes: torch.profiler over one clean batch of the info-flow or heatmap sweep.

Prints the tail-pass batch sizes used, then the operators that took the most device (or CPU) time.

    python -m benchmarks.profile_fast --shape mamba1-1.4b --prompts 64 --device cuda
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.info_flow_sweep import add_sweep_arguments, sweep_setup
from infoflow.engines.fast import FastEngine, Tail, TailGroup


class CountingEngine(FastEngine):
    """The fast engine, recording the rows of each tail pass."""

    batches: list[int]

    def run_tails(self, group: TailGroup, tails: Sequence[Tail]) -> torch.Tensor:
        self.batches.append(len(tails))
        return super().run_tails(group, tails)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweep_arguments(parser)
    parser.add_argument("--prompts", type=int, default=64, help="prompts: one clean batch")
    parser.add_argument("--rows", type=int, default=25, help="operators listed")
    args = parser.parse_args()

    device = torch.device(args.device)
    model, prompts, knockouts = sweep_setup(args)
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
