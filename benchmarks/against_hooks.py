"""The fast engine against the hooks a Transformer user would otherwise write, on identical random weights.

The info-flow sweep of ``benchmarks.info_flow_sweep`` (last <- {subject, relation, last, first}, every window
of 9 layers) computed three ways on one random-weight transformers model (GPT-2 or Llama shape):

- TransformerLens, as users write it: ``run_with_hooks``, one forward per knockout, with a hook on each knocked
  layer's attention pattern that zeroes the blocked edges and renormalises each row (Geva et al., 2023);
- TransformerLens, batched: the knockouts of many prompts as the rows of one forward, each row with its own
  mask in every layer, logits of the last position only (the best a hook can do: one forward per ``--rows``
  knockouts);
- infoflow's fast engine on our model built from the same weights through our loading path.

Prints ms per knockout of each and the fast engine's speed-up over the others, measured side by side in this
run, and the largest |Δp| between each and the fast engine over the whole next-token distribution of every
knockout checked (next to the largest effect of a knockout, |p_knocked - p_clean|, for scale).

Needs the ``bench`` extra (TransformerLens): ``pip install 'infoflow[bench]'``.

    python -m benchmarks.against_hooks --shape gpt2-xl --device cuda
    python -m benchmarks.against_hooks --shape gpt2-xl --layers 12 --prompts 2 --device cpu   # short, on a CPU
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import version
from typing import TYPE_CHECKING

import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM, PretrainedConfig

from benchmarks.info_flow_sweep import seconds_per_call, sweep_knockouts
from benchmarks.shapes import SHAPES
from infoflow.engines.base import last_token_probabilities, target_scores
from infoflow.engines.fast import FastEngine
from infoflow.interventions.knockout import Knockout
from infoflow.models.base import CausalLM
from infoflow.models.loading import instantiate

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

HOOKED_SHAPES = ("gpt2-xl", "gpt2-medium", "llama3.2-1b", "smollm2-135m")  # the Transformer shapes
MISSING_EXTRA = "this benchmark needs TransformerLens, in the bench extra: pip install 'infoflow[bench]'"


def hooked_pair(
    config: PretrainedConfig, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> tuple[CausalLM, TransformerBridge]:
    """Our model and a TransformerLens bridge around the transformers model whose weights it was built from.

    The transformers model gets its own seeded random initialisation and eager attention (the only one whose
    attention pattern a hook can change); ours is built from its state dict as a checkpoint would be.
    """
    try:
        from transformer_lens.model_bridge.sources import build_bridge_from_module
    except ImportError as error:
        raise SystemExit(f"{MISSING_EXTRA} ({error})") from error
    torch.manual_seed(seed)
    with torch.device(device):
        hf_model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    hf_model = hf_model.to(dtype).eval().requires_grad_(False)
    ours = instantiate(config, hf_model.state_dict(), dtype=dtype, device=device)
    bridge = build_bridge_from_module(hf_model, type(hf_model).__name__, hf_config=hf_model.config)
    return ours, bridge


def blocked_by_layer(knockouts: Sequence[Knockout], n_layers: int, seq_len: int) -> torch.Tensor:
    """Bool [K, L, T, T]: ``blocked[k, l, t, s]``, knockout k blocks t <- s in layer l."""
    blocked = torch.zeros(len(knockouts), n_layers, seq_len, seq_len, dtype=torch.bool)
    for row, knockout in enumerate(knockouts):
        blocked[row, list(knockout.layers)] = knockout.blocked_matrix(seq_len)
    return blocked


def zero_and_renormalise(pattern: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
    """The attention pattern [B, H, T, T] with the blocked edges [B or 1, T, T] zeroed, each row renormalised:
    a[t, s] <- a[t, s] [s kept] / sum_s' a[t, s'] [s' kept] (= a softmax with the blocked logits at -inf)."""
    kept = pattern.masked_fill(blocked[:, None], 0.0)
    return kept / kept.sum(dim=-1, keepdim=True)


def pattern_hooks(layers: Sequence[int], blocked: torch.Tensor) -> list[tuple[str, Callable[..., torch.Tensor]]]:
    """Hooks zeroing ``blocked[:, l]`` [B, L, T, T] in the pattern of each layer l of ``layers``."""

    def hook_of(layer: int) -> Callable[..., torch.Tensor]:
        return lambda pattern, hook: zero_and_renormalise(pattern, blocked[:, layer])

    return [(f"blocks.{layer}.attn.hook_pattern", hook_of(layer)) for layer in layers]


@torch.no_grad()
def loop_probabilities(
    bridge: TransformerBridge, input_ids: torch.Tensor, knockouts: Sequence[Knockout]
) -> torch.Tensor:
    """Next-token probabilities [K, V] after ``input_ids`` [T], one ``run_with_hooks`` forward per knockout."""
    device = torch.device(bridge.cfg.device)
    blocked = blocked_by_layer(knockouts, bridge.cfg.n_layers, len(input_ids)).to(device)
    batch = input_ids[None].to(device)
    rows = []
    for knockout, row_blocked in zip(knockouts, blocked, strict=True):
        logits = bridge.run_with_hooks(batch, fwd_hooks=pattern_hooks(knockout.layers, row_blocked[None]))
        rows.append(last_token_probabilities(logits))
    return torch.cat(rows)


@torch.no_grad()
def batched_probabilities(
    bridge: TransformerBridge, prompts: torch.Tensor, knockouts: Sequence[Knockout], rows: int
) -> Iterator[torch.Tensor]:
    """Next-token probabilities of every (prompt, knockout) of ``prompts`` [P, T] (prompt-major), ``rows`` of them
    per forward with a per-row mask in every layer, logits of the last position only: [rows, V] per forward."""
    device = torch.device(bridge.cfg.device)
    blocked = blocked_by_layer(knockouts, bridge.cfg.n_layers, prompts.shape[1]).to(device)  # [K, L, T, T]
    layers = sorted({layer for knockout in knockouts for layer in knockout.layers})
    prompts = prompts.to(device)
    n_rows = len(prompts) * len(knockouts)
    for first in range(0, n_rows, rows):
        row = torch.arange(first, min(first + rows, n_rows), device=device)
        batch, row_blocked = prompts[row // len(knockouts)], blocked[row % len(knockouts)]
        hooks = pattern_hooks(layers, row_blocked)
        yield last_token_probabilities(bridge.run_with_hooks(batch, fwd_hooks=hooks, logits_to_keep=1))


def host_scores(probabilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """p(target) [N] on the host, from probabilities [N, V] and targets [N] on their device."""
    return target_scores(probabilities, targets.to(probabilities.device))[0].cpu()


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=HOOKED_SHAPES, default="gpt2-xl")
    parser.add_argument("--layers", type=int, default=None, help="keep the first N layers of the shape (CPU runs)")
    parser.add_argument("--tokens", type=int, default=12, help="prompt length")
    parser.add_argument("--window-size", type=int, default=9)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--prompts", type=int, default=32, help="prompts of the batched hooks and the fast engine")
    parser.add_argument("--loop-prompts", type=int, default=1, help="prompts of the one-forward-per-knockout loop")
    parser.add_argument("--rows", type=int, default=512, help="knockouts per forward of the batched hooks")
    args = parser.parse_args(argv)
    if args.layers is not None and args.layers < args.window_size:
        parser.error(f"--layers {args.layers} is fewer than the window size {args.window_size}: raise it")
    if not 1 <= args.loop_prompts <= args.prompts:
        parser.error(f"--loop-prompts must lie in 1..{args.prompts} (--prompts)")
    return args


def shape_config(shape: str, layers: int | None) -> PretrainedConfig:
    """The transformers config of ``shape``, cut to its first ``layers`` layers when given."""
    config = SHAPES[shape]()
    if layers is not None:
        config.num_hidden_layers = layers
    return config


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model, bridge = hooked_pair(shape_config(args.shape, args.layers), device, dtype)
    knockouts = sweep_knockouts(args.tokens, model.n_layers, args.window_size)
    generator = torch.Generator().manual_seed(0)
    vocab = model.lm_head.out_features
    prompts = torch.randint(0, vocab, (args.prompts, args.tokens), generator=generator)  # [P, T]
    targets = torch.randint(0, vocab, (args.prompts,), generator=generator)  # [P], scored like the pipeline
    row_targets = targets.repeat_interleave(len(knockouts))  # [P K], prompt-major
    loop_prompts = prompts[: args.loop_prompts]
    fast = FastEngine(model)

    # each returns p(target) of every knockout on the host, as the pipeline stores it
    def fast_scores() -> list[torch.Tensor]:
        requests = [(p, int(target), knockouts) for p, target in zip(prompts, targets, strict=True)]
        return [scores.probability for scores in fast.scores_many(requests)]

    def loop_scores() -> list[torch.Tensor]:
        return [host_scores(loop_probabilities(bridge, p, knockouts), t.expand(len(knockouts)))
                for p, t in zip(loop_prompts, targets, strict=False)]  # fmt: skip

    def batched_scores() -> list[torch.Tensor]:
        chunks = batched_probabilities(bridge, prompts, knockouts, args.rows)
        return [host_scores(p, t) for p, t in zip(chunks, row_targets.split(args.rows), strict=True)]

    seconds = {  # per knockout, each after a warm-up call
        "fast": seconds_per_call(fast_scores, device, 1) / (args.prompts * len(knockouts)),
        "loop": seconds_per_call(loop_scores, device, 1) / (args.loop_prompts * len(knockouts)),
        "batched": seconds_per_call(batched_scores, device, 1) / (args.prompts * len(knockouts)),
    }
    print_results(args, model.n_layers, len(knockouts), seconds)
    gpu = f" on {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"TransformerLens {version('transformer-lens')}, transformers {version('transformers')}, "
          f"torch {torch.__version__}{gpu}")  # fmt: skip
    check_numbers(bridge, fast, loop_prompts, knockouts, args)


def check_numbers(
    bridge: TransformerBridge,
    fast: FastEngine,
    prompts: torch.Tensor,
    knockouts: Sequence[Knockout],
    args: argparse.Namespace,
) -> None:
    """Every knockout of ``prompts`` [P, T]: the loop's and the batched hooks' probabilities [K, V] against ours;
    exits non-zero where fp32 numbers differ beyond rounding."""
    ours = [p.cpu() for p in fast.probabilities_many([(p, [None, *knockouts]) for p in prompts])]  # [1 + K, V]
    loop = [loop_probabilities(bridge, p, knockouts).cpu() for p in prompts]
    batched = torch.cat(list(batched_probabilities(bridge, prompts, knockouts, args.rows))).cpu().split(len(knockouts))
    loop_diff = max((o[1:] - p).abs().max().item() for o, p in zip(ours, loop, strict=True))
    batched_diff = max((o[1:] - p).abs().max().item() for o, p in zip(ours, batched, strict=True))
    effect = max((o[1:] - o[:1]).abs().max().item() for o in ours)
    print(f"max |p_ours - p_loop| = {loop_diff:.2e}, max |p_ours - p_batched| = {batched_diff:.2e} "
          f"({len(knockouts)} knockouts x {len(prompts)} prompts, whole next-token distribution); "
          f"largest knockout effect max |p_knocked - p_clean| = {effect:.2e}")  # fmt: skip
    # fp32: the three agree to rounding, far below what a knockout changes; half precision: reported only
    if args.dtype == "float32" and max(loop_diff, batched_diff) > max(1e-5, 1e-2 * effect):
        sys.exit("the hooks and the fast engine disagree beyond fp32 rounding")


def print_results(args: argparse.Namespace, n_layers: int, n_knockouts: int, seconds: dict[str, float]) -> None:
    """ms per knockout of each method and the fast engine's speed-up over it."""
    names = {
        "fast": "infoflow fast engine",
        "loop": "TransformerLens run_with_hooks, one forward per knockout",
        "batched": f"TransformerLens run_with_hooks, {args.rows} knockouts per forward",
    }
    table = Table(
        title=f"{args.shape} ({n_layers} layers), info-flow sweep, {args.tokens} tokens, {n_knockouts} "
        f"knockouts/prompt, {args.prompts} prompts ({args.loop_prompts} in the loop), {args.device} {args.dtype}"
    )
    table.add_column("method (p(target) of every knockout, on the host)")
    table.add_column("ms / knockout", justify="right")
    table.add_column("fast engine faster by", justify="right")
    for key, name in names.items():
        table.add_row(name, f"{1000 * seconds[key]:.4f}", f"{seconds[key] / seconds['fast']:.1f}x")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
