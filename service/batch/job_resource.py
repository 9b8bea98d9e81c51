"""The AI Platform `projects.jobs` resource, as JSON clients see it: batch prediction
(`predictionInput`) and training (`trainingInput`: `glimpse train`'s arguments, train_job.py).

Field names are camelCase and int64 fields are strings, as in Google's REST APIs (proto3 JSON),
so clients written for `ml.googleapis.com` parse our answers; a create body may carry them as
numbers or strings. Our extensions are marked below.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from service.batch.spec import JOB_ID, JobState
from service.schemas import DEFAULT_SIGNATURES, GoogleJson, PredictParameters


class _Api(GoogleJson):
    model_config = ConfigDict(extra="forbid")  # a typo in a job is a 400, not ignored


def _check_job_id(v: str) -> str:
    if not JOB_ID.match(v):
        raise ValueError("a letter, then letters, digits or underscores (at most 128)")
    return v


MAX_PATH_CHARS = 1024
MAX_LABELS = 64  # Google Cloud's limits for labels
LABEL_KEY = re.compile(r"\A[a-z][a-z0-9_-]{0,62}\Z")
_LABEL_VALUE = re.compile(r"\A[a-z0-9_-]{0,63}\Z")


def _check_path(v: str) -> str:
    if len(v) > MAX_PATH_CHARS:
        raise ValueError(f"a path of at most {MAX_PATH_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise ValueError("a path without control characters (NUL, newline, ...)")
    return v


def _check_labels(v: dict[str, str]) -> dict[str, str]:
    """Google Cloud's label rules, so that labels stay small and mean the same everywhere."""
    if len(v) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels")
    for key, value in v.items():
        if not LABEL_KEY.match(key):
            raise ValueError(
                f"label key {key[:70]!r}: a lowercase letter, then up to 62 lowercase letters,"
                " digits, '_' or '-'"
            )
        if not _LABEL_VALUE.match(value):
            raise ValueError(
                f"label {key!r}: a value of up to 63 lowercase letters, digits, '_' or '-'"
            )
    return v


# A proto int64: read from a JSON number or string, written as a string (proto3 JSON mapping).
Int64 = Annotated[
    int,
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "int64"}, mode="serialization"),
]

# Job fields only the server sets. A create body that carries them (a job copied from an
# earlier answer, as `gcloud ... --format=json` prints it) is accepted and they are ignored,
# as ml.googleapis.com does; any other unknown field is still an error.
OUTPUT_ONLY = frozenset(
    {
        "createTime",
        "startTime",
        "endTime",
        "state",
        "errorMessage",
        "etag",
        "jobPosition",
        "predictionOutput",
        "trainingOutput",
    }
)


def rfc3339(moment: datetime) -> str:
    """Google's timestamps, to the millisecond, in UTC: compared as text by the job store."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> str:
    return rfc3339(datetime.now(UTC))


class PredictionInput(_Api):
    data_format: Literal["JSON", "TEXT", "DATA_FORMAT_UNSPECIFIED"] = Field(
        description="JSON and TEXT both mean JSON lines, one instance per line."
    )
    input_paths: list[str] = Field(min_length=1, max_length=100)
    output_path: str
    region: str | None = None
    model_name: str | None = Field(None, description="Must be the served model, if given.")
    version_name: str | None = None
    uri: str | None = Field(
        None, description="Not supported here: the gateway runs jobs on its served model."
    )
    max_worker_count: Int64 = Field(4, ge=1, le=64)
    batch_size: Int64 = Field(64, ge=1, le=1024)
    signature_name: str | None = None
    runtime_version: str | None = None
    output_data_format: Literal["JSON", "DATA_FORMAT_UNSPECIFIED"] | None = None
    parameters: PredictParameters = Field(
        default_factory=PredictParameters, description="Glimpse extension: predict parameters."
    )

    @field_validator("input_paths")
    @classmethod
    def _inputs(cls, v: list[str]) -> list[str]:
        return [_check_path(p) for p in v]

    @field_validator("output_path")
    @classmethod
    def _output(cls, v: str) -> str:
        return _check_path(v)

    @field_validator("signature_name")
    @classmethod
    def _default_signature(cls, v: str | None) -> str | None:
        if v not in DEFAULT_SIGNATURES:
            raise ValueError("only the default signature is served")
        return v


class PredictionOutput(_Api):
    output_path: str
    prediction_count: str = "0"
    error_count: str = "0"
    node_hours: float = 0.0
    # Glimpse extensions:
    line_count: str = "0"
    errors_by_kind: dict[str, int] = {}
    bytes_read: str = "0"
    bytes_total: str = "0"
    shards: int = 0
    attempt: int = 0


MAX_TRAINING_ARGS = 64
# AI Platform's custom training fields: the gateway runs one program, `glimpse train`.
_CUSTOM_TRAINING = frozenset(
    {
        "packageUris",
        "pythonModule",
        "masterConfig",
        "workerType",
        "workerCount",
        "workerConfig",
        "parameterServerType",
        "parameterServerCount",
        "parameterServerConfig",
        "evaluatorType",
        "evaluatorCount",
        "evaluatorConfig",
        "hyperparameters",
        "jobDir",
    }
)


class TrainingInput(_Api):
    """AI Platform's TrainingInput, for the one trainer the gateway runs: `args` are exactly
    `glimpse train`'s arguments (the import file, --model-name, --version, ...)."""

    args: list[str] = Field(min_length=1, max_length=MAX_TRAINING_ARGS)
    # Accepted, as a job written for ml.googleapis.com carries them, and ignored: training
    # runs in the gateway's own process, on its CPUs.
    region: str | None = Field(None, max_length=64, description="Ignored.")
    scale_tier: str | None = Field(None, max_length=64, description="Ignored.")
    master_type: str | None = Field(None, max_length=64, description="Ignored.")
    runtime_version: str | None = Field(None, max_length=64, description="Ignored.")
    python_version: str | None = Field(None, max_length=64, description="Ignored.")

    @model_validator(mode="before")
    @classmethod
    def _one_program(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = sorted(k for k in data if k in _CUSTOM_TRAINING)
            if given:
                raise ValueError(
                    f"{', '.join(given)}: not supported; this gateway runs `glimpse train`,"
                    " whose arguments go in args"
                )
        return data

    @field_validator("args")
    @classmethod
    def _args(cls, v: list[str]) -> list[str]:
        return [_check_path(a) for a in v]


class BuiltInAlgorithmOutput(_Api):
    framework: Literal["TENSORFLOW"] = "TENSORFLOW"
    runtime_version: str | None = None  # TensorFlow's major.minor
    python_version: str | None = None
    model_path: str = Field(description="The new version: NAME/VERSION under the model base.")


class TrainingOutput(_Api):
    completed_trial_count: Int64 = 0  # 1 once the one trial (the run) has succeeded
    is_built_in_algorithm_job: bool = True
    built_in_algorithm_output: BuiltInAlgorithmOutput | None = None  # once SUCCEEDED
    # Glimpse extensions. Progress: the stage running (view features, glimpse features,
    # evaluation) and its photos done of total.
    stage: str | None = None
    photos_done: Int64 = 0
    photos_total: Int64 = 0
    # Once SUCCEEDED: photos per split, lines and photos left out.
    splits: dict[str, int] | None = None
    bad_line_count: Int64 | None = None
    bad_photo_count: Int64 | None = None
    duplicate_count: Int64 | None = None
    attempt: int = 0


class Job(_Api):
    job_id: str
    # The project in the URL it was created under: kept in the store's own column, never in
    # the resource (AI Platform's Job has no project field). None: a job stored before
    # projects were recorded (job_store.py says how those are seen).
    project: str | None = Field(None, exclude=True)
    create_time: str = Field(default_factory=now)
    start_time: str | None = None
    end_time: str | None = None
    state: JobState = JobState.QUEUED
    error_message: str | None = None
    labels: dict[str, str] = {}
    etag: str | None = None
    prediction_input: PredictionInput | None = None
    prediction_output: PredictionOutput | None = None
    training_input: TrainingInput | None = None
    training_output: TrainingOutput | None = None

    _job_id = field_validator("job_id")(classmethod(lambda cls, v: _check_job_id(v)))

    @property
    def attempt(self) -> int:
        """How many times the job has started (restarts included)."""
        output = self.training_output or self.prediction_output
        return output.attempt if output else 0


class CreateJob(_Api):
    """The create body: a job without the fields the server sets, and one of the inputs."""

    job_id: str
    labels: dict[str, str] = {}
    prediction_input: PredictionInput | None = None
    training_input: TrainingInput | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> CreateJob:
        if (self.prediction_input is None) == (self.training_input is None):
            raise ValueError("a job has either predictionInput or trainingInput")
        return self

    @model_validator(mode="before")
    @classmethod
    def _ignore_output_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in OUTPUT_ONLY}
        return data

    _job_id = field_validator("job_id")(classmethod(lambda cls, v: _check_job_id(v)))
    _labels = field_validator("labels")(classmethod(lambda cls, v: _check_labels(v)))


class JobList(_Api):
    jobs: list[Job] = []
    next_page_token: str | None = None
