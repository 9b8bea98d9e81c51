"""The same batch job as an Apache Beam pipeline, for jobs bigger than one machine.

    Create(files) -> Reshuffle -> read lines -> BatchElements -> predict (predict.py, the
    function the plain runner uses) -> key by shard -> GroupByKey -> stage shard files

Inputs are read (inputs.py) and shards written (shard.py) by the plain runner's own code, and
the driver ends the job exactly as the plain runner does (finish.py): shards committed whole, or
not at all. DirectRunner by default; on Dataflow pass the usual Beam flags (docs/batch.md).
Workers get the model from `--model-dir` (use gs:// on Dataflow).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

try:  # the `beam` extra; only `--runner beam` imports this module (service/batch/cli.py)
    import apache_beam as beam
    from apache_beam.metrics import Metrics
    from apache_beam.options.pipeline_options import PipelineOptions
except ImportError as e:
    raise ImportError("--runner beam needs Apache Beam: pip install 'glimpse[beam]'") from e

from service.batch.finish import remove_staging, stopped, succeed
from service.batch.inputs import expand_inputs, read_lines
from service.batch.lines import Failure, LineRef, Outcome, RawLine
from service.batch.model_source import StandaloneModel, settings_for_model_dir
from service.batch.output import find_staged, staging_prefix
from service.batch.predict import predict_lines
from service.batch.shard import ShardWriter
from service.batch.spec import JobReport, JobSpec, JobState
from service.batch.storage import Storage
from service.instances import DecodeLimits
from service.settings import GatewaySettings

NAMESPACE = "glimpse_batch"


def _read_file(path: str, deadline_s: float, max_line_bytes: int) -> Iterator[RawLine]:
    """On a worker: a Storage of its own (clients do not pickle), then the file's lines."""
    yield from read_lines(Storage(deadline_s), path, max_line_bytes)


def _shard_of(ref: LineRef, shards: int) -> int:
    return zlib.crc32(f"{ref.path}\n{ref.line}".encode()) % shards


def _write_shard(
    item: tuple[int, Iterable[Outcome]], staging: str, deadline_s: float
) -> Iterator[str]:
    """Stage one shard, lines in input order; yields the staged paths (for logging)."""
    index, outcomes = item
    with tempfile.TemporaryDirectory() as tmp, ShardWriter(Path(tmp), index) as shard:
        shard.write(sorted(outcomes, key=lambda o: o.ref))
        staged = shard.stage(Storage(deadline_s), staging, index)
    yield staged.results
    if staged.has_errors:
        yield staged.errors


class PredictDoFn(beam.DoFn):
    """One model runner per worker thread, started in setup (with a real warm-up inference)."""

    def __init__(self, settings: GatewaySettings, spec: JobSpec, model_dir: str | None):
        self.settings, self.spec, self.model_dir = settings, spec, model_dir
        self.lines = Metrics.counter(NAMESPACE, "lines")
        self.predictions = Metrics.counter(NAMESPACE, "predictions")
        self.errors = Metrics.counter(NAMESPACE, "errors")

    def setup(self) -> None:
        self.loop = asyncio.new_event_loop()
        local = settings_for_model_dir(self.settings, self.model_dir)
        self.model = StandaloneModel(local)
        self.runner = self.loop.run_until_complete(self.model.start())

    def process(self, batch: list[RawLine]) -> Iterator[Outcome]:
        s = self.settings
        outcomes = self.loop.run_until_complete(
            predict_lines(
                self.runner,
                batch,
                self.spec.parameters,
                DecodeLimits.of(s),
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
        self.loop.run_until_complete(self.model.close())
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
        report = succeed(
            storage,
            spec.output_path,
            report,
            started,
            lambda: find_staged(storage, staging, shards),
        )
    except Exception as e:  # noqa: BLE001 - the report says why; nothing was committed
        report = stopped(report, started, e)
    finally:
        remove_staging(storage, staging)
    return report
