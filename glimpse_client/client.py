"""`Client`: predictions, explanations and batch jobs from a Glimpse gateway, or predictions from
a plain TF Serving REST endpoint serving the same SavedModel, as the same typed results."""

from __future__ import annotations

import base64
import io
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx

from glimpse_client import _tfserving, errors
from glimpse_client.explanation import Explanation
from glimpse_client.jobs import Job
from glimpse_client.models import ModelMetadata, ModelStatus, Prediction

Flavour = Literal["auto", "gateway", "tfserving"]
# bytes, a file path, or anything with PIL's `save(fp, format=...)` (Pillow is not imported:
# the client must not require it).
ImageLike = bytes | bytearray | memoryview | str | os.PathLike[str] | Any

# JSON around each instance and the request's parameters; kept generous so that a chunk sized
# by this estimate is never over the limit.
_INSTANCE_OVERHEAD = 320
_REQUEST_OVERHEAD = 1024


def image_bytes(image: ImageLike) -> bytes:
    """Encoded image bytes from bytes, a path, or a PIL image (sent as PNG, lossless)."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        return Path(image).read_bytes()
    if callable(getattr(image, "save", None)):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    raise TypeError(f"an image is bytes, a path or a PIL image, not {type(image).__name__}")


def _default_key(image: ImageLike) -> str | None:
    """A file's name identifies it in results and error messages; other images have none."""
    return Path(image).name if isinstance(image, str | os.PathLike) else None


class Client:
    """A Glimpse gateway or a TF Serving REST endpoint serving our SavedModel.

    Args:
        url: where the service answers, e.g. http://127.0.0.1:8080 (TF Serving: port 8501).
        token: bearer token, for a gateway started with GLIMPSE_AUTH_TOKEN.
        model: served model name.
        version: pin a model version (default: whatever the service serves as latest).
        project: the `{project}` in the jobs API path: jobs are kept per project, so one
            project never sees or cancels another's.
        flavour: `gateway`, `tfserving`, or `auto` (asks `/healthz/live`, which only the
            gateway has, on first use).
        timeout: seconds for one HTTP request, connection included.
        retries: how many times a 429 or 503 (honouring Retry-After) or a refused connection
            is retried; 0 raises at once. Each wait is at most `max_retry_wait` seconds.
        max_instances, max_payload_bytes: the service's limits (the gateway's defaults);
            `predict_many` splits its requests to stay within both.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        token: str | None = None,
        model: str = "saccader",
        *,
        version: int | None = None,
        project: str = "local",
        flavour: Flavour = "auto",
        timeout: float = 60.0,
        retries: int = 0,
        max_retry_wait: float = 30.0,
        max_instances: int = 64,
        max_payload_bytes: int = 1_500_000,
    ):
        if flavour not in ("auto", "gateway", "tfserving"):
            raise ValueError(f"flavour is auto, gateway or tfserving, not {flavour!r}")
        self.url = url.rstrip("/")
        self.model, self.version, self.project = model, version, project
        self.retries, self.max_retry_wait = max(0, retries), max_retry_wait
        self.max_instances, self.max_payload_bytes = max_instances, max_payload_bytes
        self._flavour = None if flavour == "auto" else flavour
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    # -- plumbing -----------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
        """One request, with errors mapped to GlimpseError; retries only where safe: the
        service said 'later' (429/503), or the connection was refused before anything was
        sent."""
        retries = self.retries if retry else 0
        for attempt in range(retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.ConnectError as e:
                error = errors.from_transport(e, self.url)
                wait = 0.5 * 2**attempt
            except httpx.TransportError as e:
                raise errors.from_transport(e, self.url) from e
            else:
                if response.status_code < 400:
                    return response
                error = errors.from_response(response)
                if not isinstance(error, errors.Overloaded | errors.Unavailable):
                    raise error
                wait = error.retry_after if error.retry_after is not None else 0.5 * 2**attempt
            if attempt == retries:
                raise error
            time.sleep(min(wait, self.max_retry_wait))
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise errors.ServerError(
                f"{method} {path} answered {response.status_code} with a non-JSON body",
                status=response.status_code,
            ) from None

    @property
    def flavour(self) -> Literal["gateway", "tfserving"]:
        """Which kind of service answers at `url`; asked once, on first use."""
        if self._flavour is None:
            try:
                live = self._http.get("/healthz/live")
            except httpx.TransportError as e:
                raise errors.from_transport(e, self.url) from e
            is_gateway = live.status_code == 200 and "alive" in live.text
            self._flavour = "gateway" if is_gateway else "tfserving"
        return self._flavour  # type: ignore[return-value]

    def _model_path(self) -> str:
        path = f"/v1/models/{self.model}"
        return path if self.version is None else f"{path}/versions/{self.version}"

    def _gateway_only(self, what: str) -> None:
        if self.flavour != "gateway":
            raise errors.Unsupported(
                f"{what} needs the Glimpse gateway; {self.url} is a TF Serving endpoint"
            )

    # -- predictions --------------------------------------------------------------------------

    def predict(
        self,
        image: ImageLike,
        num_glimpses: int = 6,
        top_k: int | None = None,
        *,
        key: str | None = None,
        annotated_image: bool = True,
        annotated_image_format: Literal["png", "jpeg"] | None = None,
        original_pixels: bool = True,
        glimpse_boxes: Sequence[Sequence[float]] | None = None,
    ) -> Prediction:
        """Classify one photo. `key` defaults to the file name when `image` is a path.

        `glimpse_boxes` ([ymin, xmin, ymax, xmax] in pixels of the 224x224 view) makes the
        model decide from exactly those boxes instead of choosing its own."""
        return self._predict_chunk(
            [image_bytes(image)],
            [key or _default_key(image)],
            num_glimpses,
            top_k,
            annotated_image,
            annotated_image_format,
            original_pixels,
            glimpse_boxes,
        )[0]

    def predict_many(
        self,
        images: Iterable[ImageLike],
        num_glimpses: int = 6,
        top_k: int | None = None,
        *,
        keys: Sequence[str | None] | None = None,
        annotated_image: bool = True,
        annotated_image_format: Literal["png", "jpeg"] | None = None,
        original_pixels: bool = True,
    ) -> list[Prediction]:
        """Classify many photos, in as few requests as the service's instance and payload
        limits allow; results come back in input order. One bad image fails its request
        (the error names its index within that request); use `predict` per photo to isolate
        failures."""
        images = list(images)
        if keys is not None and len(keys) != len(images):
            raise ValueError(f"{len(keys)} keys for {len(images)} images")
        blobs = [image_bytes(i) for i in images]
        names = list(keys) if keys is not None else [_default_key(i) for i in images]
        out: list[Prediction] = []
        for start, stop in self._chunks(blobs):
            out += self._predict_chunk(
                blobs[start:stop],
                names[start:stop],
                num_glimpses,
                top_k,
                annotated_image,
                annotated_image_format,
                original_pixels,
            )
        return out

    def _chunks(self, blobs: list[bytes]) -> Iterator[tuple[int, int]]:
        """[start, stop) ranges within max_instances and the payload limit (an image too big
        on its own still goes alone, so the service can name the problem: a 413)."""
        start, size = 0, _REQUEST_OVERHEAD
        for i, blob in enumerate(blobs):
            cost = 4 * ((len(blob) + 2) // 3) + _INSTANCE_OVERHEAD
            full = i - start >= self.max_instances or size + cost > self.max_payload_bytes
            if i > start and full:
                yield start, i
                start, size = i, _REQUEST_OVERHEAD
            size += cost
        if start < len(blobs):
            yield start, len(blobs)

    def _predict_chunk(
        self,
        blobs: list[bytes],
        keys: list[str | None],
        num_glimpses: int,
        top_k: int | None,
        annotated: bool,
        annotated_format: str | None,
        original_pixels: bool,
        glimpse_boxes: Sequence[Sequence[float]] | None = None,
    ) -> list[Prediction]:
        encoded = [base64.b64encode(b).decode("ascii") for b in blobs]
        boxes = None if glimpse_boxes is None else [[float(v) for v in b] for b in glimpse_boxes]
        if self.flavour == "tfserving":
            body = {
                "signature_name": "serving_options" if boxes is None else "serving_boxes",
                "instances": [
                    # TF Serving's signature needs a number: 5, as the SavedModel's default.
                    _tfserving.signature_inputs(e, num_glimpses, top_k or 5, boxes)
                    for e in encoded
                ],
            }
            rows = self._json("POST", self._model_path() + ":predict", json=body)["predictions"]
            out = [
                _tfserving.prediction(row, key, annotated, original_pixels)
                for row, key in zip(rows, keys, strict=True)
            ]
            made = {p.annotated_image_format for p in out} - {None}
            if annotated_format and made - {annotated_format}:
                raise errors.Unsupported(
                    f"TF Serving returns the SavedModel's own picture ({made.pop()}); another"
                    " format is converted by the gateway"
                )
            return out
        instances = [
            {"input_image_bytes": {"b64": e}, **({"key": k} if k is not None else {})}
            for e, k in zip(encoded, keys, strict=True)
        ]
        parameters = {
            "num_glimpses": num_glimpses,
            # Left out, the gateway lists 5 classes, or every class of a model with fewer.
            **({"top_k": top_k} if top_k is not None else {}),
            "annotated_image": annotated,
            # Left out, the model's own encoding (JPEG for current exports).
            **({"annotated_image_format": annotated_format} if annotated_format else {}),
            "original_pixels": original_pixels,
        }
        if boxes is not None:
            parameters = {k: v for k, v in parameters.items() if k != "num_glimpses"}
            parameters["glimpse_boxes"] = boxes
        body = {"instances": instances, "parameters": parameters}
        answer = self._json("POST", self._model_path() + ":predict", json=body)
        return [Prediction.from_gateway(p) for p in answer["predictions"]]

    # -- explanations -------------------------------------------------------------------------

    def explain(
        self,
        image: ImageLike,
        method: str = "glimpses",
        *,
        key: str | None = None,
        **parameters: Any,
    ) -> Explanation:
        """Explain one photo's classification (gateway only; docs/explain.md).

        `method` is one of glimpses, sag, vanilla_gradients, guided_backprop,
        integrated_gradients, blur_ig, smoothgrad, grad_cam, xrai, occlusion; other keyword
        arguments are the request's `parameters` (steps=..., label_index=...,
        visualization={"overlay_type": "original"}, ...). The service checks them: a wrong
        name or value is an InvalidRequest naming it.
        """
        self._gateway_only("explanations")
        instance: dict[str, Any] = {
            "input_image_bytes": {"b64": base64.b64encode(image_bytes(image)).decode("ascii")}
        }
        if (key := key or _default_key(image)) is not None:
            instance["key"] = key
        body = {"instances": [instance], "parameters": {"method": method, **parameters}}
        answer = self._json("POST", self._model_path() + ":explain", json=body)
        return Explanation.from_body(answer["explanations"][0])

    # -- batch jobs ---------------------------------------------------------------------------

    def _jobs(self) -> str:
        return f"/v1/projects/{self.project}/jobs"

    def submit_job(
        self,
        input_paths: str | Sequence[str],
        output_path: str,
        job_id: str | None = None,
        *,
        num_glimpses: int = 6,
        top_k: int | None = None,
        annotated_image: bool = True,
        batch_size: int = 64,
        max_worker_count: int = 4,
        labels: dict[str, str] | None = None,
    ) -> Job:
        """Create a batch prediction job on the gateway, on this client's model; it runs in
        the background.

        Paths are gs:// URIs, or local paths under the gateway's GLIMPSE_JOBS_LOCAL_ROOT
        (relative paths are relative to it). Returns the job as created (QUEUED or RUNNING).
        """
        self._gateway_only("batch jobs")
        paths = [input_paths] if isinstance(input_paths, str) else list(input_paths)
        body = {
            "jobId": job_id or f"job_{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}",
            "labels": labels or {},
            "predictionInput": {
                "modelName": f"projects/{self.project}/models/{self.model}",
                "dataFormat": "JSON",
                "inputPaths": paths,
                "outputPath": output_path,
                "batchSize": batch_size,
                "maxWorkerCount": max_worker_count,
                "parameters": {
                    "num_glimpses": num_glimpses,
                    **({"top_k": top_k} if top_k is not None else {}),
                    "annotated_image": annotated_image,
                },
            },
        }
        return Job.from_body(self._json("POST", self._jobs(), json=body))

    def get_job(self, job_id: str) -> Job:
        self._gateway_only("batch jobs")
        return Job.from_body(self._json("GET", f"{self._jobs()}/{job_id}"))

    def list_jobs(self, page_size: int = 100) -> list[Job]:
        """Every job on the gateway, newest first (all pages)."""
        self._gateway_only("batch jobs")
        jobs: list[Job] = []
        params: dict[str, Any] = {"pageSize": page_size}
        while True:
            page = self._json("GET", self._jobs(), params=params)
            jobs += [Job.from_body(j) for j in page.get("jobs", [])]
            if not page.get("nextPageToken"):
                return jobs
            params["pageToken"] = page["nextPageToken"]

    def cancel_job(self, job_id: str) -> Job:
        """Ask a queued or running job to stop; returns it (CANCELLING or CANCELLED).
        Cancelling an ended job is an InvalidRequest naming its state."""
        self._gateway_only("batch jobs")
        self._json("POST", f"{self._jobs()}/{job_id}:cancel")
        return self.get_job(job_id)

    def wait_job(
        self,
        job_id: str,
        timeout: float | None = 3600.0,
        poll_interval: float = 1.0,
        on_poll: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job has ended (SUCCEEDED, FAILED, CANCELLED) and return it; raise
        JobTimeout after `timeout` seconds (None: wait as long as it takes; the job keeps
        running either way). A FAILED job is returned, not raised: its `error_message` says
        why. `on_poll` sees the job after each poll that found it still going (for progress)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job.done:
                return job
            if deadline is not None and time.monotonic() + poll_interval > deadline:
                raise errors.JobTimeout(f"job {job_id} still {job.state} after {timeout:g} s")
            if on_poll is not None:
                on_poll(job)
            time.sleep(poll_interval)

    # -- model status -------------------------------------------------------------------------

    def status(self) -> ModelStatus:
        """TF Serving's model status (both flavours answer it)."""
        return ModelStatus.from_body(self._json("GET", self._model_path()))

    def metadata(self) -> ModelMetadata:
        """The model's signatures, as TF Serving's GetModelMetadata gives them."""
        return ModelMetadata.from_body(self._json("GET", self._model_path() + "/metadata"))

    def ready(self) -> bool:
        """Whether a prediction would be served now. False while the model loads, the service
        shuts down or nothing answers; a wrong token or model name still raises, since
        waiting would never fix those."""
        try:
            if self.flavour == "gateway":
                self._send("GET", "/healthz/ready", retry=False)
            # Also for the gateway: its readiness probe checks neither token nor model name.
            status = ModelStatus.from_body(self._json("GET", self._model_path(), retry=False))
            return status.available
        except (errors.Unavailable, errors.ConnectionFailed, errors.Timeout):
            return False
