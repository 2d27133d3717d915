"""Running the chunks of a run on a Ray cluster (``--ray``): Ray schedules, retries and restarts; this module only
says what a worker holds and what it computes.

Each worker is a Ray actor that loads the model once and runs the chunk jobs the driver sends it (with the
runner's out-of-memory back-off). The driver stays the only writer of the results store: ``run_prompts`` stores
each chunk's rows as its result comes back, so a killed driver resumes from the store like a local run, and
local and distributed runs of one manifest resume each other. A killed worker is restarted by Ray and its
chunks are run again (``max_restarts`` / ``max_task_retries``); no chunk is stored twice, since only the driver
stores, once per chunk, and re-adding a stored prompt is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from infoflow.data.spans import PromptError
from infoflow.engines.base import Engine, make_engine
from infoflow.experiments.runner import Chunk, JobFactory, Rows, run_chunk
from infoflow.extras import require_extra
from infoflow.models.load import LoadedModel

RESTARTS = 3  # restarts of a dead worker, and retries of each chunk it was running


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker loads: the model as the command line names it, and its engine; ``device`` "auto": a GPU when
    the cluster has GPUs, else the CPU."""

    model: str
    device: str = "auto"
    dtype: str = "float32"
    engine: str = "fast"
    batch_size: int | None = None


class ChunkWorker:
    """A Ray actor's state: its own model and engine, loaded once (a ``ModelContext`` for chunk jobs)."""

    def __init__(self, spec: WorkerSpec) -> None:
        from infoflow.models import load_model

        self.loaded: LoadedModel = load_model(spec.model, device=spec.device, dtype=spec.dtype)
        self.engine: Engine = make_engine(spec.engine, self.loaded.model, spec.batch_size)

    def run(self, index: int, make_job: JobFactory, chunk: Chunk) -> tuple[int, list[Rows | PromptError]]:
        return index, run_chunk(chunk, make_job(self))


class RayExecutor:
    """Chunks run on ``workers`` actors of a Ray cluster: ``address`` "local" starts one in this process, "auto"
    joins the one started by ``ray start`` on this machine, HOST:PORT joins a remote head. Each actor takes one
    GPU when ``spec.device`` is CUDA, else one CPU; ``workers`` defaults to as many as the cluster has."""

    def __init__(self, spec: WorkerSpec, address: str = "local", workers: int | None = None) -> None:
        require_extra("ray", "running on a Ray cluster")
        import ray

        self.started = not ray.is_initialized()  # then this process owns the connection and ends it in close()
        if self.started:
            ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
        resources = ray.cluster_resources()
        if spec.device == "auto":
            spec = replace(spec, device="cuda" if resources.get("GPU", 0) >= 1 else "cpu")
        self.device_type = spec.device.split(":")[
            0
        ]  # where the chunks compute (cpu or cuda): part of the run's identity
        gpu = self.device_type == "cuda"
        count = workers or int(resources.get("GPU" if gpu else "CPU", 0))
        if count < 1:
            raise ValueError(f"the Ray cluster at {address!r} has no {'GPU' if gpu else 'CPU'} for a worker")
        actor = ray.remote(ChunkWorker).options(
            num_gpus=1 if gpu else 0, num_cpus=1, max_restarts=RESTARTS, max_task_retries=RESTARTS
        )
        self.workers: list[Any] = [actor.remote(spec) for _ in range(count)]

    def map(self, make_job: JobFactory, chunks: list[Chunk]) -> Iterator[tuple[int, list[Rows | PromptError]]]:
        from ray.util import ActorPool

        pool = ActorPool(self.workers)
        yield from pool.map_unordered(lambda worker, i: worker.run.remote(i, make_job, chunks[i]), range(len(chunks)))

    def close(self) -> None:
        """End the workers (and the Ray connection or local cluster, if this executor started it)."""
        import ray

        for worker in self.workers:
            ray.kill(worker)
        if self.started:
            ray.shutdown()
