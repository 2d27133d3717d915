"""CPU threads for torch: ``--threads N``, else ``$INFOFLOW_THREADS``, else a default that leaves room for
the other work of the machine.

torch's own default (a thread per core) oversubscribes a machine that is busy with other work: its threads
then wait on each other, and small models slow down many times over (docs/performance.md, "CPU threads").
"""

from __future__ import annotations

import os

THREADS_VARIABLE = "INFOFLOW_THREADS"
MAX_DEFAULT_THREADS = 4


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads(cpus: int | None = None, load: float | None = None) -> int:
    """The CPUs this process may use less the machine's load (the run queue averaged over the last minute,
    ``os.getloadavg``), rounded, between 1 and ``MAX_DEFAULT_THREADS``."""
    cpus = available_cpus() if cpus is None else cpus
    load = os.getloadavg()[0] if load is None else load
    return max(1, min(MAX_DEFAULT_THREADS, round(cpus - load)))


def resolve_threads(requested: int | None = None) -> int:
    """``requested``, else ``$INFOFLOW_THREADS``, else ``default_threads()``."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be at least 1, got {requested}")
        return requested
    text = os.environ.get(THREADS_VARIABLE, "").strip()
    if not text:
        return default_threads()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"${THREADS_VARIABLE} must be a positive number of threads, got {text!r}")
    return int(text)


def apply_threads(threads: int) -> None:
    """Make torch compute with ``threads`` CPU threads (in this process)."""
    import torch  # here: resolving a thread count needs no torch

    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
