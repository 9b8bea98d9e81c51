"""Gateway settings, read once from the environment (prefix GLIMPSE_) and validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GLIMPSE_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, validation_alias="PORT", ge=1, le=65535)

    backend: Literal["embedded", "tfserving"] = "embedded"
    model_name: str = "saccader"
    model_dir: Path = Path("models")  # embedded: <model_dir>/<model_name>/<version>/
    model_version: int | None = None  # None = the highest version present
    # tfserving: ask for a TF Serving version label (e.g. "stable") instead of a number, so a
    # rollout moves the label in models.config and no gateway needs a restart.
    model_version_label: str | None = None

    tfserving_address: str | None = None  # host:port of TF Serving's gRPC API
    tfserving_retries: int = Field(2, ge=0, le=10)  # on UNAVAILABLE, with backoff

    max_batch_size: int = Field(16, ge=1, le=256)
    # 0 = greedy: an idle model starts at once, and requests arriving while it runs form the
    # next batch, so batching costs a lone request nothing. >0 waits for batch-mates.
    max_batch_wait_ms: float = Field(0.0, ge=0.0, le=1000.0)
    queue_limit: int = Field(256, ge=1)  # instances waiting; beyond it requests get 429
    max_payload_bytes: int = Field(1_500_000, ge=1024)  # AI Platform's online limit
    max_instances: int = Field(64, ge=1, le=1000)
    max_image_pixels: int = Field(40_000_000, ge=10_000)  # decompression-bomb guard
    request_timeout_s: float = Field(30.0, gt=0.0)
    shutdown_grace_s: float = Field(20.0, ge=0.0)

    # Explanations (:explain) cost up to seconds each and run on one thread of their own;
    # batch jobs are the place for many. Beyond max_pending requests queued or running: 429.
    explain_max_instances: int = Field(8, ge=1, le=1000)
    explain_max_evaluations: int = Field(2000, ge=1)  # model rows: ~30 s of Lite0 on 2 cores
    explain_max_pending: int = Field(4, ge=1)

    # Batch prediction (glimpse batch, the jobs API, the Beam pipeline).
    batch_max_line_bytes: int = Field(16 * 1024 * 1024, ge=1024)  # longer lines are errors
    # How long one storage call or one batch of predictions keeps being retried (with
    # backoff) before the job is FAILED: outages shorter than this cost time, not lines.
    storage_retry_deadline_s: float = Field(120.0, gt=0.0)
    predict_retry_deadline_s: float = Field(120.0, gt=0.0)
    # The jobs API runs batch jobs inside the gateway. Off for replicated deployments, where
    # batch runs as its own Kubernetes Job (deploy/batch) or on Dataflow.
    jobs_enabled: bool = True
    # The jobs API keeps job state in this SQLite file, so jobs survive a gateway restart
    # (None: in memory, lost on restart).
    jobs_db: Path | None = None
    jobs_max_running: int = Field(1, ge=1, le=16)
    jobs_max_attempts: int = Field(3, ge=1, le=10)  # restarts a RUNNING job survives
    # Jobs may read and write gs:// paths; local paths only under this folder (None: none).
    jobs_local_root: Path | None = None

    auth_token: str | None = None  # if set, all but probes and demo need "Bearer <token>"
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _backend_needs_its_address(self) -> GatewaySettings:
        if self.backend == "tfserving" and not self.tfserving_address:
            raise ValueError("GLIMPSE_TFSERVING_ADDRESS is required with GLIMPSE_BACKEND=tfserving")
        if self.model_version is not None and self.model_version_label:
            raise ValueError("set GLIMPSE_MODEL_VERSION or GLIMPSE_MODEL_VERSION_LABEL, not both")
        if self.model_version_label and self.backend != "tfserving":
            raise ValueError("GLIMPSE_MODEL_VERSION_LABEL needs GLIMPSE_BACKEND=tfserving")
        return self
