"""Time of the fast and the reference patch engine on one prompt: causal tracing's grid (every site, layer and
position, several noise samples) and a sublayer-knockout sweep (windows of 2), with the largest difference of
their probabilities.

    python -m benchmarks.patch_engines --model builtin-llama --samples 5 --device cpu
    python -m benchmarks.patch_engines --shape mamba1-1.4b --samples 2 --device cuda --dtype bfloat16

``--shape`` takes a real model's shape with random weights (no download; the prompt tokenised by
``--model``'s tokenizer, whose ids fit every shape's vocabulary).
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.shapes import SHAPES
from infoflow.data import load_dataset
from infoflow.data.spans import find_spans
from infoflow.engines.patching import FastPatchEngine, PatchRequest, ReferencePatchEngine
from infoflow.experiments.causal_tracing import CausalTracingParams, causal_tracing_plan, corruption
from infoflow.experiments.sublayer_knockout import SUBLAYERS, SublayerKnockoutParams, sublayer_knockout_plan
from infoflow.interventions.patching import embedding_width
from infoflow.models import load_model
from infoflow.models.modes import Site
from infoflow.models.random_init import random_model


def timed(engine: FastPatchEngine | ReferencePatchEngine, request: PatchRequest) -> tuple[float, torch.Tensor]:
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
    start = time.perf_counter()
    probability = engine.scores(request).probability
    return time.perf_counter() - start, probability


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin-llama")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="a real shape, random weights, instead of --model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--samples", type=int, default=5, help="noise samples of causal tracing")
    parser.add_argument("--prompt", type=int, default=0, help="index of the synthetic prompt")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of torch (1: fastest on a shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    model = loaded.model
    if args.shape is not None:
        dtype, device = getattr(torch, args.dtype), torch.device(args.device)
        model = random_model(SHAPES[args.shape](), dtype=dtype, device=device)
    prompt = load_dataset("synthetic")[args.prompt]
    spans = find_spans(loaded.tokenizer, prompt)
    has_mlp = any(model.block(layer).mlp is not None for layer in range(model.n_layers))
    sites = tuple(site for site in Site if site is not Site.MLP or has_mlp)
    tracing = CausalTracingParams(sites=sites, samples=args.samples, noise_std=1.0)
    plan = causal_tracing_plan(spans, model.n_layers, tracing)
    noise = corruption(spans, prompt, tracing).noise(spans.num_tokens, embedding_width(model))
    ids = torch.tensor(spans.input_ids)
    knockouts = SublayerKnockoutParams(sites=tuple(s for s in SUBLAYERS if s in sites), window_sizes=(2,))
    requests = {
        f"causal tracing ({len(plan)} restorations x {args.samples} samples)": PatchRequest(
            ids, spans.target_id, [None, *(k.patch for k in plan)], noise
        ),
        "sublayer knockout (windows of 2)": PatchRequest(
            ids, spans.target_id, [None, *(k.patch for k in sublayer_knockout_plan(spans, model.n_layers, knockouts))]
        ),
    }
    print(f"{args.shape or args.model} on {args.device} ({args.dtype}), prompt of {spans.num_tokens} tokens")
    for label, request in requests.items():
        fast_time, fast = timed(FastPatchEngine(model), request)
        reference_time, reference = timed(ReferencePatchEngine(model), request)
        difference = (fast - reference).abs().max().item()
        print(
            f"{label}: fast {fast_time:.2f} s, reference {reference_time:.2f} s "
            f"({reference_time / fast_time:.1f}x), max |p_fast - p_reference| {difference:.1e}"
        )


if __name__ == "__main__":
    main()
