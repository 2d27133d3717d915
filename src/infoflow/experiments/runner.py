"""Running an experiment over prompts into the results store: resumable, one prompt per transaction.

A run is identified by its manifest (experiment, model and revision, dataset and filter, parameters); running
the same command again resumes it, skipping prompts already complete or recorded as errors. Ctrl-C leaves
the run partial with every finished prompt stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from infoflow.data.prompts import FactPrompt
from infoflow.data.spans import PromptError, TokenSpans, find_spans_many
from infoflow.knockout.engine import Engine
from infoflow.models.load import LoadedModel, short_model_name
from infoflow.store import Manifest, ResultsStore

Rows = list[dict[str, Any]]
PromptJob = Callable[[FactPrompt, TokenSpans], Rows]  # raises PromptError for an unusable prompt
ChunkJob = Callable[[list[tuple[FactPrompt, TokenSpans]]], list[Rows | PromptError]]  # per prompt of a chunk


@dataclass(frozen=True)
class RunContext:
    """Everything a run needs besides its per-prompt job."""

    loaded: LoadedModel
    engine: Engine
    store: ResultsStore
    dataset: str
    dataset_filter: str = "all"
    show_progress: bool = True


def progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("prompts"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def run_prompts(
    context: RunContext,
    kind: str,
    params: dict[str, Any],
    prompts: Sequence[FactPrompt],
    job: PromptJob | None = None,
    chunk_job: ChunkJob | None = None,
    chunk_size: int = 1,
) -> str:
    """Run ``job`` on each prompt (or ``chunk_job`` on chunks of prompts) not yet done in the run of this
    manifest; each prompt's rows, or its reason for being skipped, are stored as it completes. Returns the
    run id."""
    manifest = Manifest(
        kind=kind,
        model_id=context.loaded.name,
        model_revision=context.loaded.revision,
        dataset=context.dataset,
        dataset_filter=context.dataset_filter,
        params={**params, "n_layers": context.loaded.model.n_layers, "engine": context.engine.name},
        n_prompts=len(prompts),
    )
    run = context.store.start_run(manifest)
    done = context.store.completed_prompts(run.run_id)
    todo = [p for p in prompts if p.prompt_id not in done]
    status = "partial"
    try:
        with progress_bar(context.show_progress) as progress:
            label = f"{kind} {short_model_name(context.loaded.name)}"
            task = progress.add_task(label, total=len(prompts), completed=len(done))
            for start in range(0, len(todo), chunk_size):
                chunk = todo[start : start + chunk_size]
                max_positions = context.loaded.model.max_positions
                spans = [check_length(s, max_positions) for s in find_spans_many(context.loaded.tokenizer, chunk)]
                usable = record_errors(context.store, run.run_id, chunk, spans)
                rows = run_chunk(usable, job, chunk_job)
                store_rows(context.store, run.run_id, usable, rows)
                progress.advance(task, len(chunk))
        status = "complete"
    finally:
        context.store.finish_run(run.run_id, status)
    return run.run_id


def check_length(spans: TokenSpans | PromptError, max_positions: int | None) -> TokenSpans | PromptError:
    """A prompt longer than the model's position limit becomes a ``PromptError`` (it costs that prompt only)."""
    if isinstance(spans, TokenSpans) and max_positions is not None and spans.num_tokens > max_positions:
        return PromptError(f"prompt has {spans.num_tokens} tokens but the model supports at most {max_positions}")
    return spans


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA out-of-memory error, the CPU allocator failing, or Python's ``MemoryError``."""
    message = str(error)
    return isinstance(error, torch.OutOfMemoryError | MemoryError) or (
        isinstance(error, RuntimeError) and ("can't allocate memory" in message or "not enough memory" in message)
    )


def run_chunk(
    usable: list[tuple[FactPrompt, TokenSpans]], job: PromptJob | None, chunk_job: ChunkJob | None
) -> list[Rows | PromptError]:
    """Results of a chunk; a chunk that runs out of memory runs again prompt by prompt, and a prompt that runs
    out of memory alone gets a ``PromptError`` instead of ending the run."""
    try:
        return chunk_job(usable) if chunk_job is not None else run_each(usable, job)
    except (RuntimeError, MemoryError) as error:
        if not is_out_of_memory(error):
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if len(usable) == 1:
        tokens = usable[0][1].num_tokens
        return [PromptError(f"out of memory on this prompt ({tokens} tokens) even alone; use a smaller model or dtype")]
    return [result for item in usable for result in run_chunk([item], job, chunk_job)]


def record_errors(
    store: ResultsStore, run_id: str, chunk: Sequence[FactPrompt], spans: Sequence[TokenSpans | PromptError]
) -> list[tuple[FactPrompt, TokenSpans]]:
    """Store the reason of every prompt whose spans failed; return the usable ones."""
    errors = {p.prompt_id: s.reason for p, s in zip(chunk, spans, strict=True) if isinstance(s, PromptError)}
    if errors:
        store.add_errors(run_id, errors)
    return [(p, s) for p, s in zip(chunk, spans, strict=True) if not isinstance(s, PromptError)]


def run_each(usable: list[tuple[FactPrompt, TokenSpans]], job: PromptJob | None) -> list[Rows | PromptError]:
    """A per-prompt job over a chunk; a prompt that raises PromptError gets its error instead of rows."""
    assert job is not None, "run_prompts needs job or chunk_job"
    results: list[Rows | PromptError] = []
    for prompt, spans in usable:
        try:
            results.append(job(prompt, spans))
        except PromptError as error:
            results.append(error)
    return results


def store_rows(
    store: ResultsStore, run_id: str, usable: list[tuple[FactPrompt, TokenSpans]], results: list[Rows | PromptError]
) -> None:
    """A chunk's errors, then its rows with its prompts marked complete (one transaction)."""
    pairs = list(zip(usable, results, strict=True))
    errors = {p.prompt_id: r.reason for (p, _), r in pairs if isinstance(r, PromptError)}
    if errors:
        store.add_errors(run_id, errors)
    completed = [(p.prompt_id, r) for (p, _), r in pairs if not isinstance(r, PromptError)]
    if completed:
        store.add_rows(run_id, [row for _, rows in completed for row in rows], done=[i for i, _ in completed])


def with_ids(prompt: FactPrompt, rows: Iterable[dict[str, Any]]) -> Rows:
    return [{"prompt_id": prompt.prompt_id, **row} for row in rows]
