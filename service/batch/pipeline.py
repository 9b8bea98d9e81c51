"""The same batch job as an Apache Beam pipeline, for jobs bigger than one machine.

    Create(files) -> Reshuffle -> read lines -> BatchElements -> predict (predict.py, the
    function the plain runner uses) -> key by shard -> GroupByKey -> stage shard files

Then, on the driver, the staged shards are committed exactly as the plain runner commits them
(output.py): whole or not at all. DirectRunner by default; on Dataflow pass the usual Beam
flags (docs/batch.md). Workers get the model from `--model-dir` (use gs:// on Dataflow).
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from service.backends import make_predictor
from service.batch.lines import Failure, LineRef, Outcome, RawLine
from service.batch.model_source import settings_for_model_dir
from service.batch.output import StagedShard, commit, staging_prefix
from service.batch.predict import predict_lines
from service.batch.runner import expand_inputs
from service.batch.spec import JobReport, JobSpec, JobState
from service.batch.storage import Storage, iter_lines, join
from service.errors import InvalidInput
from service.settings import GatewaySettings

log = logging.getLogger(__name__)
NAMESPACE = "glimpse_batch"


def _read_file(path: str, deadline_s: float, max_line_bytes: int) -> Iterator[RawLine]:
    with Storage(deadline_s).open_read(path) as stream:
        for number, raw in enumerate(iter_lines(stream, max_line_bytes), start=1):
            yield LineRef(path, number), raw


def _shard_of(ref: LineRef, shards: int) -> int:
    return zlib.crc32(f"{ref.path}\n{ref.line}".encode()) % shards


def _write_shard(
    item: tuple[int, Iterable[Outcome]], staging: str, deadline_s: float
) -> Iterator[str]:
    """Stage one shard, lines in input order; yields the staged paths (for logging)."""
    import tempfile

    index, outcomes = item
    ordered = sorted(outcomes, key=lambda o: o.ref)
    storage = Storage(deadline_s)
    with tempfile.TemporaryDirectory() as tmp:
        results, errors = Path(tmp) / "results", Path(tmp) / "errors"
        with results.open("w", encoding="utf-8") as r, errors.open("w", encoding="utf-8") as e:
            for o in ordered:
                if isinstance(o, Failure):
                    e.write(o.to_json() + "\n")
                else:
                    r.write(o.json + "\n")
        storage.upload(results, join(staging, f"results-{index}"))
        yield join(staging, f"results-{index}")
        if errors.stat().st_size:
            storage.upload(errors, join(staging, f"errors-{index}"))
            yield join(staging, f"errors-{index}")


class PredictDoFn(beam.DoFn):
    """One Predictor per worker thread, started in setup (with a real warm-up inference)."""

    def __init__(self, settings: GatewaySettings, spec: JobSpec, model_dir: str | None):
        self.settings, self.spec, self.model_dir = settings, spec, model_dir
        self.lines = Metrics.counter(NAMESPACE, "lines")
        self.predictions = Metrics.counter(NAMESPACE, "predictions")
        self.errors = Metrics.counter(NAMESPACE, "errors")

    def setup(self) -> None:
        self.loop = asyncio.new_event_loop()
        local = settings_for_model_dir(self.settings, self.model_dir)
        self.predictor = make_predictor(local)
        self.loop.run_until_complete(self.predictor.start())

    def process(self, batch: list[RawLine]) -> Iterator[Outcome]:
        s = self.settings
        outcomes = self.loop.run_until_complete(
            predict_lines(
                self.predictor,
                batch,
                self.spec.parameters,
                s.max_image_pixels,
                s.predict_retry_deadline_s,
                s.max_batch_size,
            )
        )
        self.lines.inc(len(batch))
        for o in outcomes:
            if isinstance(o, Failure):
                self.errors.inc()
                Metrics.counter(NAMESPACE, f"errors_{o.kind}").inc()
            else:
                self.predictions.inc()
            yield o

    def teardown(self) -> None:
        self.loop.run_until_complete(self.predictor.close())
        self.loop.close()


def run_beam(
    spec: JobSpec,
    settings: GatewaySettings,
    model_dir: str | None = None,
    beam_args: list[str] | None = None,
) -> JobReport:
    """Build, run and commit the pipeline; job-level failures are in the report, not raised."""
    started = time.perf_counter()
    storage = Storage(settings.storage_retry_deadline_s)
    report = JobReport(
        job_id=spec.job_id, state=JobState.RUNNING, output_path=spec.output_path, runner="beam"
    )
    staging = staging_prefix(spec.output_path, spec.job_id)
    deadline = settings.storage_retry_deadline_s
    shards = spec.max_worker_count
    try:
        files = expand_inputs(storage, spec.input_paths)
        report.input_files = [f.path for f in files]
        options = PipelineOptions(beam_args or [], save_main_session=False)
        with beam.Pipeline(options=options) as p:
            _ = (
                p
                | "Files" >> beam.Create(report.input_files)
                | "Spread" >> beam.Reshuffle()
                | "Lines" >> beam.FlatMap(_read_file, deadline, settings.batch_max_line_bytes)
                | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=spec.batch_size)
                | "Predict" >> beam.ParDo(PredictDoFn(settings, spec, model_dir))
                | "Key" >> beam.Map(lambda o: (_shard_of(o.ref, shards), o))
                | "Shard" >> beam.GroupByKey()
                | "Stage" >> beam.FlatMap(_write_shard, staging, deadline)
            )
        counters = {
            m.key.metric.name: m.committed
            for m in p.result.metrics().query()["counters"]
            if m.key.metric.namespace == NAMESPACE
        }
        report.lines = counters.get("lines", 0)
        report.predictions = counters.get("predictions", 0)
        report.errors = counters.get("errors", 0)
        report.errors_by_kind = {
            k.removeprefix("errors_"): v
            for k, v in sorted(counters.items())
            if k.startswith("errors_") and v
        }
        if not report.balanced:
            raise RuntimeError(f"line accounting broke: {report}")
        staged_names = set(storage.list_names(staging))
        staged = [
            StagedShard(
                join(staging, f"results-{k}"),
                join(staging, f"errors-{k}"),
                f"errors-{k}" in staged_names,
            )  # fmt: skip
            for k in range(shards)
            if f"results-{k}" in staged_names
        ]
        seconds = time.perf_counter() - started
        report = report.model_copy(
            update={
                "state": JobState.SUCCEEDED,
                "shards": max(1, len(staged)),
                "seconds": round(seconds, 3),
                "instances_per_s": round(report.lines / seconds, 2),
            }
        )
        commit(storage, spec.output_path, staged, report.model_dump_json(indent=1).encode())
    except InvalidInput as e:
        report = report.model_copy(update={"state": JobState.FAILED, "error_message": e.message})
    except Exception as e:  # noqa: BLE001 - the report says why; nothing was committed
        log.exception("beam batch job %s failed", spec.job_id)
        message = f"{type(e).__name__}: {str(e)[:1000]}"
        report = report.model_copy(update={"state": JobState.FAILED, "error_message": message})
    finally:
        try:
            storage.delete_tree(staging)
        except Exception:  # noqa: BLE001
            log.warning("could not remove staging files under %s", staging, exc_info=True)
    if report.state != JobState.SUCCEEDED:
        report.seconds = round(time.perf_counter() - started, 3)
    return report
