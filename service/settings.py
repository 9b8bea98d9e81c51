"""Gateway settings, read once from the environment (prefix GLIMPSE_) and validated at start-up."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, NonNegativeInt, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# TF Serving's label syntax (g3doc/serving_config.md), and the names that are versions: `N`,
# and AI Platform's `vN`.
LABEL_NAME = re.compile(r"[A-Za-z0-9_]+")
VERSION_NAME = re.compile(r"v?([0-9]+)")  # fullmatch: ASCII digits, no trailing newline


def check_label(name: str) -> None:
    """TF Serving's label syntax, and never a version's own name: `versions/1` and
    `versions/v1` must keep meaning version 1 on AI Platform's routes (ValueError: why)."""
    if not LABEL_NAME.fullmatch(name):
        raise ValueError(f"version label {name!r}: letters, digits and '_' only")
    if VERSION_NAME.fullmatch(name):
        raise ValueError(f"version label {name!r} would hide version {name}")


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GLIMPSE_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, validation_alias="PORT", ge=1, le=65535)

    backend: Literal["embedded", "tfserving"] = "embedded"
    # The models served (service/model_config.py): those TF Serving's model config file lists
    # (`glimpse serve --model-config-file`, the text format of TF Serving's
    # --model_config_file), or without one every model folder under model_dir
    # (<model_dir>/<name>/<version>/). Both are polled: a new version folder (or model
    # folder) is served without a restart, within model_poll_s plus its load.
    model_config_file: Path | None = None
    model_dir: Path = Path("models")
    model_poll_s: float = Field(2.0, gt=0.0)  # TF Serving's --file_system_poll_wait_seconds
    # The default model: what routes that name no model use (Vertex's endpoint id when none
    # is set, batch jobs without a modelName, `glimpse predict`); always served without a
    # config file, so a base without it says so in its status.
    model_name: str = "saccader"
    # Without a config file, the default model's version policy and labels (with one, the
    # file's model_version_policy and version_labels say them for each model).
    model_version: int | None = None  # None = the highest version present
    # Version labels, as TF Serving's models.config `version_labels`: names that clients use
    # instead of numbers (TF Serving's /labels/{label} routes, AI Platform's versions/{label}),
    # so a rollout moves a name, not every client. JSON: GLIMPSE_VERSION_LABELS='{"stable": 1}'.
    # With TF Serving, labels not named here are TF Serving's to resolve.
    version_labels: dict[str, NonNegativeInt] = Field(default_factory=dict)
    # Requests without a version go to the version this label names (e.g. "stable"), in
    # every model, followed at every poll: a rollout moves the label in models.config and no
    # gateway needs a restart. A model whose label names nothing cannot serve them.
    model_version_label: str | None = None

    @field_validator("grpc_port", mode="before")
    @classmethod
    def _grpc_off(cls, value: object) -> object:
        """GLIMPSE_GRPC_PORT= (empty) or `off` turns gRPC off."""
        if isinstance(value, str) and value.strip().lower() in ("", "off", "none"):
            return None
        return value

    @field_validator("version_labels")
    @classmethod
    def _labels_are_names(cls, labels: dict[str, int]) -> dict[str, int]:
        for name in labels:
            check_label(name)
        return labels

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
    # Decoding runs in its own pool of threads, never on the event loop (probes) nor on the
    # model's thread; these bound what one request may cost it (docs/reliability.md).
    decode_workers: int = Field(2, ge=1, le=64)
    max_decode_pixels: int = Field(50_000_000, ge=10_000)  # per request, summed over images
    max_jpeg_scans: int = Field(64, ge=1, le=10_000)
    max_jpeg_scan_pixels: int = Field(400_000_000, ge=1_000_000)  # scans x pixels, one JPEG
    request_timeout_s: float = Field(30.0, gt=0.0)  # decode + queue + model, per request
    # Tensor requests (TF Serving's tensor forms, v2: the data plane's `infer`) of a signature
    # that reads more than the images run outside the batchers: at most this many per model
    # wait at once (429 beyond). Any tensor answer may hold at most this many values (~10
    # bytes each in JSON).
    tensor_max_pending: int = Field(4, ge=1)  # per model
    max_answer_values: int = Field(2_000_000, ge=1000)
    # A tensor request runs in pieces of at most this many rows, each one turn on the model
    # (service/scheduler.py): what other requests may wait behind it.
    tensor_piece_rows: int = Field(4, ge=1, le=1000)
    # Connections (uvicorn): slow or idle clients must not hold the server's sockets.
    body_timeout_s: float = Field(30.0, gt=0.0)  # between two chunks of a body: 408 after
    # The request line and headers, from the connection's opening or the previous answer:
    # 408 and closed after (service/http_protocol.py; h11 only).
    header_timeout_s: float = Field(10.0, gt=0.0)
    keep_alive_s: float = Field(5.0, gt=0.0)  # an idle keep-alive connection is closed
    max_connections: int = Field(512, ge=1)  # concurrent connections; beyond: 503
    max_header_bytes: int = Field(16_384, ge=4096)  # request line + headers: 431 beyond
    # h11 bounds what it buffers of the request line and headers (max_header_bytes, between
    # reads); httptools parses faster but would buffer megabytes of headers.
    http_parser: Literal["h11", "httptools"] = "h11"
    shutdown_grace_s: float = Field(20.0, ge=0.0)
    # The nice value (CPU priority) of the threads that run the model, decode and parse; the
    # event loop's keeps the process's, normally 0; 0: all equal (service/priority.py).
    worker_nice: int = Field(10, ge=0, le=19)

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
    # Retention: finished jobs are forgotten after this many days, and the oldest finished
    # ones beyond this many jobs in all (their outputs stay where they were written).
    jobs_retention_days: float = Field(30.0, gt=0.0)
    jobs_max_stored: int = Field(10_000, ge=10)
    # Jobs may read and write gs:// paths; local paths only under this folder (None: none).
    jobs_local_root: Path | None = None
    # Training jobs' feature cache, the one `glimpse train` reads from the same variable
    # (None: ~/.cache/glimpse/features). Text, not a Path: a gs:// folder is one too.
    feature_cache: str | None = None

    # Vertex AI online prediction (service/routes/vertex.py): the one endpoint this gateway
    # answers as (None: its model name, e.g. .../endpoints/saccader), and the one location it
    # answers in (None: any, as one deployment is one endpoint wherever the client says it is).
    vertex_endpoint_id: str | None = Field(None, pattern=r"^[\w-]+$")
    vertex_location: str | None = Field(None, pattern=r"^[\w-]+$")

    # Open Inference Protocol gRPC (inference.GRPCInferenceService): KServe's port 8081; 0 is
    # any free port (tests, a second gateway on one machine), None turns it off.
    grpc_port: int | None = Field(8081, ge=0, le=65535)
    auth_token: str | None = None  # if set, all but probes and demo need "Bearer <token>"
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

    def server_options(self) -> dict:
        """uvicorn's connection limits for these settings (the CLI and the tests' servers)."""
        from service.http_protocol import protocol_class

        http = protocol_class(self.header_timeout_s) if self.http_parser == "h11" else "httptools"
        return {
            "http": http,
            "timeout_keep_alive": max(1, round(self.keep_alive_s)),
            "limit_concurrency": self.max_connections,
            "h11_max_incomplete_event_size": self.max_header_bytes,
            "timeout_graceful_shutdown": int(self.shutdown_grace_s) or None,
        }

    @property
    def model_base(self) -> Path:
        """Where the default model's versions are without a config file (batch runners and
        the CLI read it): `<model_dir>/<model_name>/<version>/`."""
        return self.model_dir / self.model_name

    @model_validator(mode="after")
    def _backend_needs_its_address(self) -> GatewaySettings:
        if self.backend == "tfserving" and not self.tfserving_address:
            raise ValueError("GLIMPSE_TFSERVING_ADDRESS is required with GLIMPSE_BACKEND=tfserving")
        if self.model_version is not None and self.model_version_label:
            raise ValueError("set GLIMPSE_MODEL_VERSION or GLIMPSE_MODEL_VERSION_LABEL, not both")
        if self.model_config_file is not None and (
            self.model_version is not None or self.version_labels
        ):
            raise ValueError(
                "with GLIMPSE_MODEL_CONFIG_FILE, versions and labels are the file's"
                " (model_version_policy, version_labels), not GLIMPSE_MODEL_VERSION or"
                " GLIMPSE_VERSION_LABELS"
            )
        return self
