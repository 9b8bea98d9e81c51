"""What a batch job is asked to do, and what it reports back (CLI, jobs API, summary file)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from service.schemas import PredictParameters

JOB_ID = re.compile(r"\A[A-Za-z][A-Za-z0-9_]{0,127}\Z")  # AI Platform's rule for job ids


def new_job_id(prefix: str = "glimpse_batch") -> str:
    return f"{prefix}_{datetime.now(UTC):%Y%m%d_%H%M%S_%f}"


class JobState(StrEnum):
    QUEUED = "QUEUED"
    PREPARING = "PREPARING"  # training jobs: started, reading the import file and backbone
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class JobSpec(BaseModel):
    """`gcloud ai-platform jobs submit prediction`'s inputs, plus the prediction parameters."""

    job_id: str = Field(default_factory=new_job_id)
    input_paths: list[str] = Field(min_length=1)
    output_path: str
    data_format: Literal["text"] = "text"  # JSON lines; TF records are not supported
    batch_size: int = Field(64, ge=1, le=1024)
    max_worker_count: int = Field(4, ge=1, le=64)
    parameters: PredictParameters = Field(default_factory=PredictParameters)

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, v: str) -> str:
        if not JOB_ID.match(v):
            raise ValueError("job id: a letter, then letters, digits or underscores (<= 128)")
        return v

    @field_validator("input_paths")
    @classmethod
    def _inputs(cls, v: list[str]) -> list[str]:
        paths = [p.strip() for p in v if p.strip()]
        if not paths:
            raise ValueError("at least one input path")
        return paths

    @field_validator("output_path")
    @classmethod
    def _output(cls, v: str) -> str:
        if not v.strip() or any(c in v for c in "*?["):
            raise ValueError("output path: a folder, without wildcards")
        return v.strip()


class Progress(BaseModel):
    """Counts so far; `bytes_read` of `bytes_total` drives progress bars."""

    bytes_total: int = 0
    bytes_read: int = 0
    lines: int = 0
    predictions: int = 0
    errors: int = 0


class JobReport(BaseModel):
    job_id: str
    state: JobState
    error_message: str | None = None
    output_path: str
    input_files: list[str] = []
    lines: int = 0
    predictions: int = 0
    errors: int = 0
    errors_by_kind: dict[str, int] = {}
    shards: int = 0
    seconds: float = 0.0
    instances_per_s: float = 0.0
    runner: str = "local"

    @property
    def balanced(self) -> bool:
        """The invariant every finished job keeps: lines in = predictions + errors."""
        return self.lines == self.predictions + self.errors
