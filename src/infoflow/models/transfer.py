"""Copies between host and GPU that do not wait for the GPU's queued work.

A plain copy from pageable host memory, or to it, waits for everything queued before it, and leaves the GPU
idle while the host prepares what comes next; through pinned memory the copy is queued like a kernel.
"""

from __future__ import annotations

import torch


def to_device_async(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``; to a GPU through pinned memory, without waiting."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def to_host_async(tensor: torch.Tensor) -> torch.Tensor:
    """A GPU tensor copied to pinned host memory without waiting (read it after an event recorded after this
    call has completed); a host tensor as is."""
    if tensor.device.type != "cuda":
        return tensor
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return host.copy_(tensor, non_blocking=True)
