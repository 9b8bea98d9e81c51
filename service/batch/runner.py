"""The plain batch runner: one process, asyncio workers sharing one Predictor.

A reader streams the input files line by line (bounded memory whatever their size) and deals
batches round-robin to `max_worker_count` workers; each worker predicts its batches and writes
its own shard to local spool files. Several workers keep the model busy while others decode
and encode. At the end the shards are staged and committed (output.py); on failure or
cancellation nothing is committed and the previous output stays as it was.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from service.batch.lines import Failure, LineRef, RawLine
from service.batch.output import StagedShard, commit, stage_shard, staging_prefix
from service.batch.predict import predict_lines
from service.batch.spec import JobReport, JobSpec, JobState, Progress
from service.batch.storage import FileInfo, Storage, iter_lines
from service.errors import InvalidInput
from service.predictor import Predictor
from service.settings import GatewaySettings

log = logging.getLogger(__name__)

ProgressFn = Callable[[Progress], None]


class JobCancelled(Exception):
    pass


def expand_inputs(storage: Storage, patterns: list[str]) -> list[FileInfo]:
    """Every pattern must match something: a typo should fail the job, not yield 0 lines."""
    seen: dict[str, FileInfo] = {}
    for pattern in patterns:
        found = storage.expand(pattern)
        if not found:
            raise InvalidInput(f"no input files match {pattern}")
        for f in found:
            seen.setdefault(f.path, f)
    return list(seen.values())


def read_batches(
    storage: Storage, files: list[FileInfo], batch_size: int, max_line_bytes: int
) -> Iterator[tuple[list[RawLine], int]]:
    """(lines, bytes read) per batch, across file boundaries, in input order."""
    batch: list[RawLine] = []
    size = 0
    for info in files:
        with storage.open_read(info.path) as stream:
            for number, raw in enumerate(iter_lines(stream, max_line_bytes), start=1):
                batch.append((LineRef(info.path, number), raw))
                size += (raw if isinstance(raw, int) else len(raw)) + 1
                if len(batch) == batch_size:
                    yield batch, size
                    batch, size = [], 0
    if batch:
        yield batch, size


class _Shard:
    """One worker's spool files and counts."""

    def __init__(self, folder: Path, index: int):
        self.results_path = folder / f"results-{index}.jsonl"
        self.errors_path = folder / f"errors-{index}.jsonl"
        self.results = self.results_path.open("w", encoding="utf-8")
        self.errors = self.errors_path.open("w", encoding="utf-8")
        self.lines = 0

    def close(self) -> None:
        self.results.close()
        self.errors.close()


async def run_job(
    spec: JobSpec,
    predictor: Predictor,
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
    kinds: Counter[str] = Counter()
    staging: str | None = None
    with tempfile.TemporaryDirectory(prefix="glimpse-batch-") as spool:
        shards = [_Shard(Path(spool), k) for k in range(spec.max_worker_count)]
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
                    for q in queues:
                        await q.put(None)

            async def work(shard: _Shard, queue: asyncio.Queue) -> None:
                while (item := await queue.get()) is not None:
                    if cancel.is_set():
                        continue  # drain so the reader never blocks
                    lines, size = item
                    outcomes = await predict_lines(
                        predictor,
                        lines,
                        spec.parameters,
                        settings.max_image_pixels,
                        settings.predict_retry_deadline_s,
                        settings.max_batch_size,
                    )
                    for outcome in outcomes:
                        if isinstance(outcome, Failure):
                            shard.errors.write(outcome.to_json() + "\n")
                            kinds[outcome.kind] += 1
                            progress.errors += 1
                        else:
                            shard.results.write(outcome.json + "\n")
                            progress.predictions += 1
                    shard.lines += len(lines)
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

            report.lines, report.predictions = progress.lines, progress.predictions
            report.errors, report.errors_by_kind = progress.errors, dict(sorted(kinds.items()))
            if not report.balanced:  # a bug, never a silent loss
                raise RuntimeError(f"line accounting broke: {report}")
            active = [s for s in shards if s.lines]
            staging = staging_prefix(spec.output_path, spec.job_id)

            def stage_and_commit() -> int:
                staged: list[StagedShard] = [
                    stage_shard(storage, staging, k, s.results_path, s.errors_path)
                    for k, s in enumerate(active)
                ]
                if cancel.is_set():
                    raise JobCancelled
                done = _finished(report, started, JobState.SUCCEEDED, len(staged) or 1)
                return commit(
                    storage, spec.output_path, staged, done.model_dump_json(indent=1).encode()
                )

            report.shards = await asyncio.to_thread(stage_and_commit)
            report = _finished(report, started, JobState.SUCCEEDED, report.shards)
        except JobCancelled:
            report = _finished(report, started, JobState.CANCELLED)
            report.error_message = "cancelled before the output was committed"
        except InvalidInput as e:
            report = _finished(report, started, JobState.FAILED)
            report.error_message = e.message
        except Exception as e:  # noqa: BLE001 - the report says why; nothing was committed
            log.exception("batch job %s failed", spec.job_id)
            report = _finished(report, started, JobState.FAILED)
            report.error_message = f"{type(e).__name__}: {str(e)[:1000]}"
        finally:
            if staging:
                await asyncio.to_thread(_cleanup, storage, staging)
    return report


def _finished(report: JobReport, started: float, state: JobState, shards: int = 0) -> JobReport:
    seconds = time.perf_counter() - started
    return report.model_copy(
        update={
            "state": state,
            "shards": shards,
            "seconds": round(seconds, 3),
            "instances_per_s": round(report.lines / seconds, 2) if seconds > 0 else 0.0,
        }
    )


def _cleanup(storage: Storage, staging: str) -> None:
    try:
        storage.delete_tree(staging)
    except Exception:  # noqa: BLE001 - leftovers under _temporary/ are harmless
        log.warning("could not remove staging files under %s", staging, exc_info=True)
