"""The plain batch runner: one process, asyncio workers sharing one model.

A reader streams the input files line by line (bounded memory whatever their size) and deals
batches round-robin to `max_worker_count` workers; each worker predicts its batches and writes
its own shard (shard.py). Several workers keep the model busy while others decode and encode.
The job ends as every job ends (finish.py): shards staged and committed whole, or, on failure
or cancellation, nothing committed and the previous output left as it was.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

from service.batch.finish import JobCancelled, remove_staging, stopped, succeed
from service.batch.inputs import expand_inputs, read_lines
from service.batch.lines import RawLine
from service.batch.output import StagedShard, staging_prefix
from service.batch.predict import BatchModel, predict_lines
from service.batch.shard import ShardWriter
from service.batch.spec import JobReport, JobSpec, JobState, Progress
from service.batch.storage import FileInfo, Storage
from service.instances import DecodeLimits
from service.settings import GatewaySettings

ProgressFn = Callable[[Progress], None]


def read_batches(
    storage: Storage, files: list[FileInfo], batch_size: int, max_line_bytes: int
) -> Iterator[tuple[list[RawLine], int]]:
    """(lines, bytes read) per batch, across file boundaries, in input order."""
    batch: list[RawLine] = []
    size = 0
    for info in files:
        with closing(read_lines(storage, info.path, max_line_bytes)) as lines:  # closed with us
            for ref, raw in lines:
                batch.append((ref, raw))
                size += (raw if isinstance(raw, int) else len(raw)) + 1
                if len(batch) == batch_size:
                    yield batch, size
                    batch, size = [], 0
    if batch:
        yield batch, size


async def run_job(
    spec: JobSpec,
    model: BatchModel,
    settings: GatewaySettings,
    storage: Storage | None = None,
    on_progress: ProgressFn | None = None,
    cancel: asyncio.Event | None = None,
) -> JobReport:
    """Run one job to the end; never raises for job-level failures (they are in the report)."""
    storage = storage or Storage(settings.storage_retry_deadline_s)
    cancel = cancel or asyncio.Event()
    started = time.perf_counter()
    report = JobReport(job_id=spec.job_id, state=JobState.RUNNING, output_path=spec.output_path)
    progress = Progress()
    staging: str | None = None
    with tempfile.TemporaryDirectory(prefix="glimpse-batch-") as spool:
        shards = [ShardWriter(Path(spool), k) for k in range(spec.max_worker_count)]
        try:
            files = await asyncio.to_thread(expand_inputs, storage, spec.input_paths)
            report.input_files = [f.path for f in files]
            progress.bytes_total = sum(f.size for f in files)
            queues: list[asyncio.Queue] = [asyncio.Queue(maxsize=2) for _ in shards]

            async def read() -> None:
                batches = read_batches(
                    storage, files, spec.batch_size, settings.batch_max_line_bytes
                )
                try:
                    for i in itertools.count():
                        item = await asyncio.to_thread(next, batches, None)
                        if item is None or cancel.is_set():
                            break
                        await queues[i % len(queues)].put(item)
                finally:
                    batches.close()
                # Not in the `finally`: when a worker failed, the others are cancelled, and
                # waiting to put into a full queue that nobody reads would never end.
                for q in queues:
                    await q.put(None)

            async def work(shard: ShardWriter, queue: asyncio.Queue) -> None:
                while (item := await queue.get()) is not None:
                    if cancel.is_set():
                        continue  # drain so the reader never blocks
                    lines, size = item
                    outcomes = await predict_lines(
                        model,
                        lines,
                        spec.parameters,
                        DecodeLimits.of(settings),
                        settings.predict_retry_deadline_s,
                        settings.max_batch_size,
                        cancel,
                    )
                    predictions, errors = shard.write(outcomes)
                    progress.predictions += predictions
                    progress.errors += errors
                    progress.lines += len(lines)
                    progress.bytes_read += size
                    if on_progress:
                        on_progress(progress)

            tasks = [asyncio.create_task(read())]
            tasks += [asyncio.create_task(work(s, q)) for s, q in zip(shards, queues, strict=True)]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for s in shards:
                    s.close()
            if cancel.is_set():
                raise JobCancelled

            kinds = sum((s.errors_by_kind for s in shards), Counter[str]())
            report.lines, report.predictions = progress.lines, progress.predictions
            report.errors, report.errors_by_kind = progress.errors, dict(sorted(kinds.items()))
            staging = staging_prefix(spec.output_path, spec.job_id)
            in_use = [s for s in shards if s.lines]  # as many shards as got lines

            def stage() -> list[StagedShard]:
                staged = [s.stage(storage, staging, k) for k, s in enumerate(in_use)]
                if cancel.is_set():  # the last moment a cancel can keep the old output
                    raise JobCancelled
                return staged

            report = await asyncio.to_thread(
                succeed, storage, spec.output_path, report, started, stage
            )
        except Exception as e:  # noqa: BLE001 - the report says why; nothing was committed
            report = stopped(report, started, e)
        finally:
            if staging:
                await asyncio.to_thread(remove_staging, storage, staging)
    return report
