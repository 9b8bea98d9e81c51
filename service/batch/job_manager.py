"""The gateway's managed jobs: create, get, list, cancel, and a scheduler that runs them.

Two kinds, as AI Platform's jobs API has: batch prediction (`predictionInput`) and training
(`trainingInput`, whose args are `glimpse train`'s: train_job.py). Training jobs run one at a
time in a worker thread of their own, beside batch jobs (GLIMPSE_JOBS_MAX_RUNNING), and write
the new version into the gateway's model base, which the data plane's poll then serves.

Batch jobs run in the gateway process on a served model (`predictionInput.modelName`, else
the default model), through the data plane: they share the model's micro-batcher and turns
with online requests, which keep their place in the queue because a job keeps at most one
model batch in flight per worker. State lives in a JobStore; after a restart, jobs that were
RUNNING (or PREPARING) or QUEUED run again from the start, which is safe because outputs are
committed whole (output.py) and versions are written aside and renamed into place. A job
interrupted by crashes `jobs_max_attempts` times is FAILED rather than retried forever; a
graceful shutdown does not count as an attempt.

Every call is scoped to the project in the URL (job_store.py): a job is created in it, and
get, list and cancel see only its jobs. Jobs of all projects share the scheduler's queue, the
running limit and retention.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import re
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from service import priority
from service.admission import VersionRef, check_parameters
from service.batch import job_filter, train_job
from service.batch.job_resource import (
    BuiltInAlgorithmOutput,
    CreateJob,
    Job,
    JobList,
    PredictionOutput,
    TrainingOutput,
    now,
    rfc3339,
)
from service.batch.job_store import JobStore
from service.batch.runner import run_job
from service.batch.spec import JobReport, JobSpec, JobState, Progress
from service.batch.storage import Storage, is_gcs
from service.dataplane import DataPlane
from service.errors import (
    Conflict,
    GlimpseError,
    InvalidInput,
    JobNotFound,
    ModelNotFound,
    NotReady,
    redact_paths,
)
from service.instances import explain_validation
from service.settings import GatewaySettings

log = logging.getLogger(__name__)

_PROGRESS_SAVE_S = 1.0
# Project ids, numbers and domain-scoped ids (`example.com:proj`), loosely: what may be stored.
_PROJECT = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")

RunKey = tuple[str | None, str]  # (project, job id): a job in the scheduler


class JobManager:
    def __init__(self, settings: GatewaySettings, plane: DataPlane):
        self._settings = settings
        self._plane = plane
        self._store: JobStore = None  # type: ignore[assignment]  # opened in start()
        self._storage = Storage(settings.storage_retry_deadline_s)
        # Each running job's task and its cancel (an asyncio.Event, or for training the
        # threading.Event the Trainer checks between batches).
        self._running: dict[RunKey, tuple[asyncio.Task, asyncio.Event | threading.Event]] = {}
        self._training: set[RunKey] = set()  # those of _running that are training jobs
        self._train_pool = priority.worker_threads(1, "train-job", settings.worker_nice)
        self._wake: asyncio.Event | None = None
        self._scheduler: asyncio.Task | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._store = JobStore(self._settings.jobs_db)
        self._wake = asyncio.Event()
        self._recover()
        self._scheduler = asyncio.create_task(self._schedule(), name="batch-jobs")

    def _recover(self) -> None:
        for job in self._store.all():
            if job.state == JobState.CANCELLING:
                self._finish(job, JobState.CANCELLED, "the gateway restarted while cancelling")
            elif job.state in (JobState.RUNNING, JobState.PREPARING):
                attempt = job.attempt
                if attempt >= self._settings.jobs_max_attempts:
                    self._finish(
                        job,
                        JobState.FAILED,
                        f"interrupted by a gateway restart {attempt} times; create it again"
                        " (under a new job id) to retry",
                    )
                else:
                    job.state = JobState.QUEUED
                    self._store.update(job)
                    log.info("job %s requeued after a restart", job.job_id)

    def interrupt(self) -> None:
        """Ask running jobs to stop at a batch boundary, before the data plane starts to refuse
        work: a batch refused by a shutting-down plane would otherwise be retried past the
        grace, and the job counted as crashed."""
        self._closing = True
        if self._scheduler:
            self._scheduler.cancel()
        for _, cancel in self._running.values():
            cancel.set()

    async def close(self, grace_s: float) -> None:
        """Stop running jobs at a batch boundary; they go back to QUEUED for the next start."""
        self.interrupt()
        if self._scheduler:
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        tasks = [t for t, _ in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=max(grace_s, 0.1))
        # A training run past the grace (an export is not cancellable) finishes in its thread;
        # its job stays RUNNING, and the next start reruns it (already_written).
        self._train_pool.shutdown(wait=False, cancel_futures=True)
        self._store.close()

    # -- API -------------------------------------------------------------------------------

    def _model(self, given) -> str:
        """The served model a job names (`modelName`, or the model of its `versionName`),
        else the default model."""
        named = given.model_name or ""
        if not named and given.version_name and "/versions/" in given.version_name:
            named = given.version_name.split("/versions/", 1)[0]
        name = named.rsplit("/", 1)[-1] if named else self._plane.default_model
        if name not in self._plane.models:
            field = "modelName" if given.model_name else "versionName"
            served = ", ".join(sorted(self._plane.models))
            raise InvalidInput(f"predictionInput.{field}: {name!r} is not served here ({served})")
        return name

    async def _check_version(self, model: str, resource: str) -> None:
        """A job runs on the version its versionName names (by number, `vN` or a label), the
        default otherwise: one that does not serve is refused now, not after it starts."""
        name = resource.rsplit("/", 1)[-1]
        field = "predictionInput.versionName"
        served = self._plane.model(model)
        try:
            number = await served.number_of(VersionRef.name(name))
        except NotReady:
            return  # a label the model server resolves, while it cannot: not known yet
        except ModelNotFound:
            raise InvalidInput(
                f"{field}: {name!r} is not a version or a version label here"
            ) from None
        except InvalidInput as e:  # a number past int64
            raise InvalidInput(f"{field}: {e.message}") from None
        assert number is not None  # a name always names a version
        try:
            served.default()  # NotReady while loading: whether it will serve is not known yet
            served.version(number)
        except NotReady:
            return
        except ModelNotFound:
            raise InvalidInput(
                f"{field}: {name} is version {number}; this gateway serves"
                f" {served.default_number()}"
            ) from None

    async def create(self, project: str, request: CreateJob) -> Job:
        if not _PROJECT.match(project):
            raise InvalidInput(
                f"projects/{project[:64]}: a project id is letters, digits and . _ : -"
            )
        if request.training_input is not None:
            job = Job(
                job_id=request.job_id,
                project=project,
                labels=request.labels,
                training_input=request.training_input,
                training_output=TrainingOutput(),
            )
            await self._check_training(job)
            return self._insert(project, job)
        given = request.prediction_input
        assert given is not None  # CreateJob has one of the two
        if given.uri:
            raise InvalidInput(
                "predictionInput.uri: this gateway runs jobs on its served model; "
                "use `glimpse batch submit --model-dir` for another model"
            )
        model = self._model(given)
        if given.version_name:
            await self._check_version(model, given.version_name)
        for i, path in enumerate(given.input_paths):
            self._check_path(path, f"predictionInput.inputPaths[{i}]")
        self._check_path(given.output_path, "predictionInput.outputPath")
        job = Job(
            job_id=request.job_id,
            project=project,
            labels=request.labels,
            prediction_input=given,
            prediction_output=PredictionOutput(output_path=given.output_path),
        )
        self._spec(job)  # what the runner will be given: refused now, not after it starts
        try:
            check_parameters(self._plane.model(model).default().model_info(), given.parameters)
        except NotReady:
            pass  # loading: the runner checks them when the job starts
        except InvalidInput as e:
            raise InvalidInput(f"predictionInput.{e.message}") from None
        return self._insert(project, job)

    def _insert(self, project: str, job: Job) -> Job:
        self._prune()
        if not self._store.insert(project, job):
            raise Conflict(f"job {job.job_id} already exists")
        if self._wake:
            self._wake.set()
        return job

    def get(self, project: str, job_id: str) -> Job:
        """Another project's job is not found, exactly like a job that does not exist."""
        job = self._store.get(project, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} not found")
        return job

    def list(
        self, project: str, page_size: int, page_token: str | None, filter_text: str | None = None
    ) -> JobList:
        """A page of the project's jobs that match `filter_text` (job_filter.py), newest first.

        The page token names the last job listed (keyset paging, stable while jobs are created)
        and the project and filter it was issued for: used with another, it is a 400, not a
        silently different listing."""
        chosen = job_filter.parse(filter_text)
        scope = _scope(project, chosen)
        after = _read_token(page_token, scope) if page_token else None
        jobs = self._store.page(project, after, page_size + 1, chosen.matches)
        more = len(jobs) > page_size
        last = jobs[page_size - 1] if more else None
        return JobList(
            jobs=jobs[:page_size],
            next_page_token=_token(last.create_time, last.job_id, scope) if last else None,
        )

    def cancel(self, project: str, job_id: str) -> None:
        job = self.get(project, job_id)
        key = (job.project, job.job_id)
        if job.state.finished:
            raise InvalidInput(f"job {job_id} is already {job.state.value}")
        if job.state == JobState.QUEUED and key not in self._running:
            self._finish(job, JobState.CANCELLED, "cancelled before it started")
            return
        if job.state == JobState.CANCELLING:
            return  # asked already
        job.state = JobState.CANCELLING
        job.error_message = "cancel requested"
        self._store.update(job)
        if key in self._running:
            self._running[key][1].set()

    # -- running ---------------------------------------------------------------------------

    def _check_path(self, path: str, field: str) -> None:
        """gs:// anywhere; local paths only under jobs_local_root (a job must not read or
        overwrite arbitrary files of the gateway's machine)."""
        if is_gcs(path):
            return
        root = self._settings.jobs_local_root
        if root is None:
            raise InvalidInput(f"{field}: only gs:// paths are allowed (local paths are off)")
        local = Path(path.removeprefix("file://"))
        resolved = (local if local.is_absolute() else root / local).resolve()
        if not resolved.is_relative_to(root.resolve()):
            raise InvalidInput(f"{field}: local paths must be under the jobs folder")

    async def _schedule(self) -> None:
        assert self._wake is not None
        while True:
            ready = any(m.is_ready() for m in self._plane.models.values())
            for job in self._store.queued():
                key = (job.project, job.job_id)
                if key in self._running:
                    continue
                name = f"{job.project}/{job.job_id}"
                if job.training_input is not None:  # one at a time; needs no served model
                    if self._training:
                        continue
                    cancel: asyncio.Event | threading.Event = threading.Event()
                    work = self._run_training(job, cancel)
                    self._training.add(key)
                else:
                    batch_jobs = len(self._running) - len(self._training)
                    if not ready or batch_jobs >= self._settings.jobs_max_running:
                        continue
                    cancel = asyncio.Event()
                    work = self._run_job(job, cancel)
                task = asyncio.create_task(self._run(job, work), name=name)
                self._running[key] = (task, cancel)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    def _local(self, path: str) -> str:
        if is_gcs(path) or self._settings.jobs_local_root is None:
            return path
        local = Path(path.removeprefix("file://"))
        return str(local if local.is_absolute() else self._settings.jobs_local_root / local)

    def _spec(self, job: Job) -> JobSpec:
        """The runner's own description of the job; its validation is the create's too."""
        given = job.prediction_input
        try:
            return JobSpec(
                job_id=job.job_id,
                input_paths=[self._local(p) for p in given.input_paths],
                output_path=self._local(given.output_path),
                batch_size=given.batch_size,
                max_worker_count=given.max_worker_count,
                parameters=given.parameters,
            )
        except ValidationError as e:
            raise InvalidInput(f"predictionInput: {explain_validation(e.errors())}") from None

    def _public(self, message: str | None) -> str | None:
        """A message clients may read: local paths as the client gave them (relative to the
        jobs folder), any other server path redacted."""
        if message is None:
            return None
        root = self._settings.jobs_local_root
        if root is not None:
            for prefix in {str(root.resolve()), str(root)}:
                message = message.replace(prefix.rstrip("/") + "/", "")
        return redact_paths(message)

    def _prune(self) -> None:
        cutoff = time.time() - self._settings.jobs_retention_days * 86400
        before = rfc3339(datetime.fromtimestamp(cutoff, UTC))
        gone = self._store.prune(self._settings.jobs_max_stored, before)
        if gone:
            log.info("forgot %d finished jobs (retention)", gone)

    async def _run(self, job: Job, work) -> None:
        """Runs one job; whatever happens, its slot is released and it ends in a state."""
        try:
            await work
        except Exception as e:  # noqa: BLE001 - a bug guard: the job fails, the queue goes on
            log.exception("job %s crashed", job.job_id)
            self._finish(job, JobState.FAILED, f"internal error: {type(e).__name__}")
        finally:
            self._running.pop((job.project, job.job_id), None)
            self._training.discard((job.project, job.job_id))
            if self._wake:
                self._wake.set()

    async def _run_job(self, job: Job, cancel: asyncio.Event) -> None:
        given = job.prediction_input
        assert given is not None
        output = job.prediction_output or PredictionOutput(output_path=given.output_path)
        output.attempt += 1
        job.state, job.start_time, job.prediction_output = JobState.RUNNING, now(), output
        self._store.update(job)
        spec = self._spec(job)
        saved = time.monotonic()

        def on_progress(p: Progress) -> None:
            nonlocal saved
            _count(output, p)
            if time.monotonic() - saved > _PROGRESS_SAVE_S:
                saved = time.monotonic()
                current = self._store.get(job.project, job.job_id)
                if current and current.state == JobState.CANCELLING:
                    cancel.set()  # another replica or request asked
                else:
                    self._store.update(job)

        version = given.version_name.rsplit("/", 1)[-1] if given.version_name else None
        try:
            model = self._plane.batch_model(self._model(given), VersionRef.name(version))
        except GlimpseError as e:
            self._finish(job, JobState.FAILED, e.message)
            return
        report = await run_job(spec, model, self._settings, self._storage, on_progress, cancel)
        if report.state == JobState.CANCELLED and self._closing:
            output.attempt -= 1  # a graceful shutdown is not the job's fault
            job.state = JobState.QUEUED
            self._store.update(job)
            return
        _report_into(output, report)
        self._finish(job, report.state, report.error_message)
        log.info(
            "job %s %s: %d lines, %d predictions, %d errors",
            job.job_id, report.state.value, report.lines, report.predictions, report.errors,
        )  # fmt: skip

    # -- training jobs ---------------------------------------------------------------------

    def _model_base(self, name: str) -> Path:
        """The folder that holds model `name`'s folder: the gateway's model base, or with a
        model config file the parent of the listed model's base_path."""
        where = f"{train_job.FIELD}: --model-name {name}"
        if self._settings.backend != "embedded":
            raise InvalidInput(
                f"{train_job.FIELD}: training jobs need GLIMPSE_BACKEND=embedded: TF Serving"
                " reads its own model base; run `glimpse train --model-base` where it reads"
            )
        served = self._plane.models.get(name)
        if served is not None:
            base = served.config.base_path
            if base.name != name:
                raise InvalidInput(
                    f"{where}: its base_path in the model config does not end in /{name};"
                    " run `glimpse train --model-base` yourself"
                )
            return base.parent
        if self._settings.model_config_file is not None:
            raise InvalidInput(
                f"{where}: not in the gateway's model config file, so a new model would not"
                f" be served: add an entry for it (base_path ending in /{name}) first"
            )
        return self._settings.model_dir

    def _train_spec(self, job: Job):
        from model_export.training.trainer import TrainSpec

        assert job.training_input is not None
        given = train_job.parse_args(job.training_input.args)
        return TrainSpec(
            import_file=self._local(given.import_file),
            model_name=given.model_name,
            model_base=self._model_base(given.model_name),
            version=given.version,
            seed=given.seed,
            backbone=given.backbone,
            cache_dir=self._settings.feature_cache,
            max_bad_fraction=given.max_bad_fraction,
        )

    def _redact_base(self, message: str, base: Path) -> str:
        for prefix in {str(base.resolve()), str(base)}:
            message = message.replace(prefix.rstrip("/") + "/", "")
            message = message.replace(prefix, "the model base")
        return self._public(message) or ""

    async def _check_training(self, job: Job) -> None:
        """What can be checked cheaply, now: the arguments, the import file's place (and,
        when local, that it is a readable file), the model name and version (a clash with a
        version on disk or one a queued job will write), the backend and model config."""
        from model_export.training.trainer import TrainingError, target_version

        assert job.training_input is not None
        given = train_job.parse_args(job.training_input.args)
        import_field = f"{train_job.FIELD}: the import file"
        self._check_path(given.import_file, import_field)
        spec = self._train_spec(job)
        try:
            target_version(spec)  # the name's form, and a clash with the versions on disk
        except TrainingError as e:
            message = self._redact_base(str(e), Path(spec.model_base))
            raise InvalidInput(f"{train_job.FIELD}: {message}") from None
        if not is_gcs(spec.import_file):
            try:
                with open(spec.import_file, "rb") as f:
                    f.read(1)
            except OSError as e:
                why = e.strerror or type(e).__name__
                if isinstance(e, IsADirectoryError):
                    why = "a folder, not a file"
                raise InvalidInput(f"{import_field} {given.import_file!r}: {why}") from None
        number = given.version or 1
        for other in self._store.unfinished():
            if other.training_input is None:
                continue
            try:
                theirs = train_job.parse_args(other.training_input.args)
            except InvalidInput:
                continue
            if theirs.model_name == given.model_name and (
                given.version is None or (theirs.version or 1) == number
            ):
                who = f"job {other.job_id}" if other.project == job.project else "another job"
                raise InvalidInput(
                    f"{train_job.FIELD}: {who} ({other.state.value}) will write"
                    f" {given.model_name} version {theirs.version or 1}: wait for it, or pass"
                    " another --version"
                )

    async def _run_training(self, job: Job, cancel: threading.Event) -> None:
        from model_export.training.import_file import DatasetError
        from model_export.training.trainer import Cancelled, TrainingError

        output = job.training_output or TrainingOutput()
        # A job started before and interrupted by a restart: its version may be in place.
        resumed_since = job.start_time if output.attempt else None
        output.attempt += 1
        job.state, job.start_time, job.training_output = JobState.PREPARING, now(), output
        self._store.update(job)
        try:
            spec = self._train_spec(job)
        except GlimpseError as e:  # the model config changed since the create
            self._finish(job, JobState.FAILED, e.message)
            return
        loop = asyncio.get_running_loop()
        saved = 0.0

        def progress(stage: str, done: int, total: int) -> None:  # on the event loop
            nonlocal saved
            output.stage, output.photos_done, output.photos_total = stage, done, total
            starting = job.state == JobState.PREPARING
            if starting or time.monotonic() - saved > _PROGRESS_SAVE_S:
                saved = time.monotonic()
                current = self._store.get(job.project, job.job_id)
                if current and current.state == JobState.CANCELLING:
                    cancel.set()  # another replica or request asked
                    return
                job.state = JobState.RUNNING
                self._store.update(job)

        def on_progress(stage: str, done: int, total: int) -> None:  # in the worker thread
            with contextlib.suppress(RuntimeError):  # the loop closed: the gateway stopped
                loop.call_soon_threadsafe(progress, stage, done, total)

        root = self._settings.jobs_local_root
        started = time.monotonic()
        try:
            trained = await loop.run_in_executor(
                self._train_pool, train_job.run, spec, root, resumed_since, on_progress, cancel
            )
        except Cancelled:
            if self._closing:
                output.attempt -= 1  # a graceful shutdown is not the job's fault
                job.state = JobState.QUEUED
                self._store.update(job)
                return
            self._finish(job, JobState.CANCELLED, "cancelled; no version was written")
            return
        except (TrainingError, DatasetError) as e:
            self._finish(job, JobState.FAILED, str(e))
            return
        except Exception as e:  # noqa: BLE001 - storage, TensorFlow: the job fails, with why
            log.exception("training job %s failed", job.job_id)
            self._finish(job, JobState.FAILED, f"{type(e).__name__}: {str(e)[:1000]}")
            return
        version = f"{spec.model_name}/{Path(trained.path).name}"
        output.completed_trial_count = 1
        output.built_in_algorithm_output = BuiltInAlgorithmOutput(
            runtime_version=_tensorflow(),
            python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
            model_path=version,
        )
        output.splits = trained.splits
        output.bad_line_count, output.bad_photo_count = trained.bad_lines, trained.bad_photos
        output.duplicate_count = trained.duplicates
        self._finish(job, JobState.SUCCEEDED, None)
        log.info(
            "training job %s SUCCEEDED: %s in %.0f s", job.job_id, version,
            time.monotonic() - started,
        )  # fmt: skip

    def _finish(self, job: Job, state: JobState, message: str | None) -> None:
        job.state, job.end_time = state, now()
        job.error_message = self._public(message) if state != JobState.SUCCEEDED else None
        self._store.update(job)


def _tensorflow() -> str | None:
    """TensorFlow's major.minor, as ml v1 reports a runtime version."""
    from importlib import metadata

    try:
        return ".".join(metadata.version("tensorflow").split(".")[:2])
    except metadata.PackageNotFoundError:
        return None


def _scope(project: str, chosen: job_filter.JobFilter) -> str:
    """What a page token is valid for: this project and this filter (in its normal form)."""
    return hashlib.sha256(json.dumps([project, str(chosen)]).encode()).hexdigest()[:16]


def _token(create_time: str, job_id: str, scope: str) -> str:
    """An opaque page token: where the next page starts (the last job seen), and for what."""
    raw = json.dumps([create_time, job_id, scope], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_token(token: str, scope: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        create_time, job_id, issued_for = json.loads(raw)
        if not all(isinstance(v, str) for v in (create_time, job_id, issued_for)):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("pageToken: not a token this server issued") from None
    if issued_for != scope:
        raise InvalidInput(
            "pageToken: issued for another project or filter; list again from the first page"
        )
    return create_time, job_id


def _count(output: PredictionOutput, p: Progress) -> None:
    output.line_count = str(p.lines)
    output.prediction_count = str(p.predictions)
    output.error_count = str(p.errors)
    output.bytes_read, output.bytes_total = str(p.bytes_read), str(p.bytes_total)


def _report_into(output: PredictionOutput, report: JobReport) -> None:
    if report.state == JobState.SUCCEEDED:
        output.line_count = str(report.lines)
        output.prediction_count = str(report.predictions)
        output.error_count = str(report.errors)
        output.errors_by_kind = report.errors_by_kind
        output.shards = report.shards
    output.node_hours = round(report.seconds / 3600, 6)
