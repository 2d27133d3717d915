"""One training step of a causal LM on right-padded sentences, replayed as a CUDA graph on GPUs.

Without the mamba_ssm kernels, transformers' Mamba-1 runs its selective scan as a Python loop over
positions: tens of thousands of tiny kernels per step, where launching costs far more than computing.
Captured once as a CUDA graph, a step replays them without the Python and launch overhead.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F
from transformers import PreTrainedModel


def sentence_loss(logits: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over every real position.

    logits [B, T, V] at position t predict ids[:, t + 1]; position t counts when t + 1 < lengths[b].
    Written with a weight mask, not boolean indexing, so that shapes never depend on the data (graph-safe).
    """
    counts = (torch.arange(ids.shape[1] - 1, device=ids.device)[None, :] < (lengths[:, None] - 1)).float()  # [B, T-1]
    losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")  # [B, T-1]
    return (losses * counts).sum() / counts.sum()


def cosine_with_warmup(step: int, steps: int, warmup: int, floor: float = 0.1) -> float:
    """LR multiplier at ``step``: linear warmup to 1, then cosine decay to ``floor`` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: PreTrainedModel, lr: float, weight_decay: float, graphed: bool) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms, biases, A_log, D). A CUDA graph needs a tensor lr."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    device = next(model.parameters()).device
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=torch.tensor(lr, device=device) if graphed else lr,
        betas=(0.9, 0.95),
        capturable=graphed,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)  # in place: the captured graph reads this tensor
        else:
            group["lr"] = lr


class TrainStep:
    """``step(ids, lengths) -> loss``: forward, backward, gradient clipping and AdamW on a [B, T] batch.

    With ``graphed`` (CUDA only) the step is captured once and replayed. Capturing needs a few warm-up
    steps; the parameters and the optimizer state are put back afterwards, so the first real step
    starts from the same state as without a graph.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        optimizer: torch.optim.AdamW,
        batch_shape: tuple[int, int],
        graphed: bool,
        max_grad_norm: float = 1.0,
    ) -> None:
        self.model, self.optimizer, self.max_grad_norm = model, optimizer, max_grad_norm
        device = next(model.parameters()).device
        self.ids = torch.zeros(batch_shape, dtype=torch.long, device=device)
        self.lengths = torch.full(batch_shape[:1], batch_shape[1], dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        if graphed:
            self._capture()

    def _step(self) -> torch.Tensor:
        logits = self.model(self.ids, use_cache=False).logits
        loss = sentence_loss(logits.float(), self.ids, self.lengths)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        return loss.detach()

    def _capture(self) -> None:
        parameters = [p.detach().clone() for p in self.model.parameters()]
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up (allocations, lazy init) outside the graph
                for _ in range(3):
                    self.optimizer.zero_grad(set_to_none=True)
                    self._step()
            torch.cuda.current_stream().wait_stream(side)
            self.optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.loss = self._step()
            self.graph = graph
        finally:  # undo the warm-up: original weights, fresh AdamW moments and step count
            with torch.no_grad():
                for p, saved in zip(self.model.parameters(), parameters, strict=True):
                    p.copy_(saved)
                for state in self.optimizer.state.values():
                    for value in state.values():
                        if isinstance(value, torch.Tensor):
                            value.zero_()

    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        self.ids.copy_(ids)
        self.lengths.copy_(lengths)
        if self.graph is not None:
            self.graph.replay()
            return self.loss.clone()
        self.optimizer.zero_grad(set_to_none=True)
        return self._step()
