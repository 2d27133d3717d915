"""Fast vs reference engine on the paper's sweeps, at real model shapes with random weights.

``--sweep info-flow`` (default): per prompt, last <- {subject, relation, last, first} in every window
(ws 9, start-aligned). ``--sweep heatmap``: last <- each single position in every window. Prints, measured
side by side in this run: time per prompt of batched clean forward passes alone, of the fast engine
(scoring every knockout as the pipeline does, end to end) and of the reference engine (one forward per
knockout, timed on a sample of knockouts); the ratios; and the largest probability difference between the
engines on the sampled knockouts.

    python -m benchmarks.info_flow_sweep --shape mamba1-130m --prompts 8 --reference-prompts 1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.shapes import SHAPES
from infoflow.engines.fast import FastEngine
from infoflow.engines.reference import ReferenceEngine
from infoflow.interventions.knockout import Knockout, window_starts
from infoflow.models.base import CausalLM
from infoflow.models.random_init import random_model


def sweep_knockouts(seq_len: int, n_layers: int, window_size: int, sweep: str = "info-flow") -> list[Knockout]:
    """The 4-source sweep for a prompt whose subject is tokens 1..3, or the heatmap's one source per position."""
    last = seq_len - 1
    subject = [1, 2, 3]
    if sweep == "heatmap":
        sources = [[position] for position in range(seq_len)]
    else:
        sources = [subject, [p for p in range(seq_len) if p not in subject], [last], [0]]
    return [
        Knockout.between([last], positions, range(start, start + window_size))
        for positions in sources
        for start in window_starts(window_size, n_layers)
    ]


def seconds_per_call(function: Callable[[], object], device: torch.device, calls: int) -> float:
    function()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    begin = time.perf_counter()
    for _ in range(calls):
        function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - begin) / calls


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every sweep benchmark shares: shape, sweep, prompts, device and dtype, batch size."""
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mamba1-130m")
    parser.add_argument("--sweep", choices=["info-flow", "heatmap"], default="info-flow")
    parser.add_argument("--tokens", type=int, default=12, help="prompt length")
    parser.add_argument("--window-size", type=int, default=9)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--max-batch", type=int, default=None, help="knockout rows per tail pass (auto)")


def sweep_setup(args: argparse.Namespace) -> tuple[CausalLM, list[torch.Tensor], list[Knockout]]:
    """A random-weight model of ``args.shape``, ``args.prompts`` random prompts and the sweep's knockouts."""
    model = random_model(SHAPES[args.shape](), dtype=getattr(torch, args.dtype), device=torch.device(args.device))
    generator = torch.Generator().manual_seed(0)
    vocab = model.lm_head.out_features
    prompts = [torch.randint(0, vocab, (args.tokens,), generator=generator) for _ in range(args.prompts)]
    return model, prompts, sweep_knockouts(args.tokens, model.n_layers, args.window_size, args.sweep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweep_arguments(parser)
    parser.add_argument("--prompts", type=int, default=4, help="prompts timed with the fast engine")
    parser.add_argument("--reference-prompts", type=int, default=1, help="prompts timed with the reference")
    parser.add_argument(
        "--reference-knockouts", type=int, default=None, help="knockouts per prompt timed with the reference (all)"
    )
    parser.add_argument("--max-prompts", type=int, default=64, help="prompts per clean pass")
    args = parser.parse_args()

    device = torch.device(args.device)
    model, prompts, knockouts = sweep_setup(args)
    sampled = knockouts[: args.reference_knockouts]  # the reference costs one full forward whichever knockout
    fast = FastEngine(model, max_batch=args.max_batch, max_prompts=args.max_prompts)
    reference = ReferenceEngine(model)
    requests = [(p, 0, [None, *knockouts]) for p in prompts]  # target token 0: scored like the pipeline
    reference_prompts = prompts[: args.reference_prompts]

    def clean_passes() -> None:
        for first in range(0, len(prompts), args.max_prompts):
            model(torch.stack(prompts[first : first + args.max_prompts]).to(device))

    with torch.no_grad():
        clean = seconds_per_call(clean_passes, device, 1)
        fast_time = seconds_per_call(lambda: fast.scores_many(requests), device, 1)
        reference_time = seconds_per_call(
            lambda: [reference.probabilities(p, sampled) for p in reference_prompts], device, 1
        )
        fast_results = fast.probabilities_many([(p, knockouts) for p in reference_prompts])
        difference = max(
            (fast_p[: len(sampled)] - reference.probabilities(p, sampled)).abs().max().item()
            for p, fast_p in zip(reference_prompts, fast_results, strict=True)
        )
    per_prompt = {
        "clean forward (batched)": clean / len(prompts),
        "fast engine": fast_time / len(prompts),
        "reference engine": reference_time / len(reference_prompts) * len(knockouts) / len(sampled),
    }
    table = Table(
        title=f"{args.shape} ({model.n_layers} layers), {args.sweep}, {args.tokens} tokens, {len(knockouts)} "
        f"knockouts/prompt, {args.prompts} prompts, {args.device} {args.dtype}"
    )
    table.add_column("engine")
    table.add_column("s / prompt", justify="right")
    table.add_column("ms / knockout", justify="right")
    for name, seconds in per_prompt.items():
        table.add_row(name, f"{seconds:.4f}", f"{1000 * seconds / len(knockouts):.3f}")
    Console().print(table)
    print(f"fast vs reference: {per_prompt['reference engine'] / per_prompt['fast engine']:.1f}x faster")
    print(f"fast / clean forward: {per_prompt['fast engine'] / per_prompt['clean forward (batched)']:.2f}x the time")
    print(
        f"max |p_fast - p_reference| = {difference:.2e} ({len(sampled)} knockouts x {len(reference_prompts)} prompts)"
    )
    print(f"fast engine, {len(prompts)} prompts end to end: {fast_time:.2f} s")


if __name__ == "__main__":
    main()
