"""Every error status Google's routes (`/v1/projects/...`: ml v1, its jobs API, Vertex AI) can
answer, as google-api-core turns it into an exception: the class for the HTTP code, the
gateway's own message, and a google.rpc.Status whose code agrees with both.

Three live gateways (tiny model): an ordinary one with a two-instance queue, a tight one (1 KiB
bodies, a 1 ms deadline, Vertex endpoint 4242 in europe-west4 only), and one whose model failed
to load. The GAPIC clients, which raise the same classes from the same bodies, close the file.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import numpy as np
import pytest
import requests
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud.aiplatform_v1 import PredictionServiceClient

from tests.conftest import b64, encode
from tests.errors import error_message
from tests.servers import explainer_held, live_server, wait_until

VERTEX = "/v1/projects/demo/locations/us-central1/endpoints/saccader"
ML = "/v1/projects/demo/models/saccader"
JOBS = "/v1/projects/demo/jobs"


@pytest.fixture(scope="module")
def small() -> bytes:
    """An image whose request fits in the tight gateway's 1 KiB."""
    rng = np.random.default_rng(1)
    return encode(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))


def payload(*images: bytes, **parameters) -> dict:
    out: dict = {"instances": [{"input_image_bytes": {"b64": b64(i)}} for i in images]}
    return {**out, "parameters": parameters} if parameters else out


@pytest.fixture(scope="module")
def gateway(gateway_settings, tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    settings = gateway_settings(queue_limit=2, explain_max_pending=1, jobs_local_root=root)
    with live_server(settings) as server:
        server.root = root
        yield server


@pytest.fixture(scope="module")
def tight(gateway_settings):
    settings = gateway_settings(
        max_payload_bytes=1024,
        request_timeout_s=0.001,
        vertex_endpoint_id="4242",
        vertex_location="europe-west4",
        jobs_enabled=False,
    )
    with live_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def broken(gateway_settings, tmp_path_factory):
    settings = gateway_settings(model_dir=tmp_path_factory.mktemp("empty"), jobs_enabled=False)
    with live_server(settings, ready=False) as server:
        deadline = time.monotonic() + 30
        while "failed" not in httpx.get(server.url + "/healthz/startup").text:
            assert time.monotonic() < deadline, "the load failure was never reported"
            time.sleep(0.05)
        yield server


# HTTP code -> the exception google-api-core raises for it, and the rpc code's own class
# (a subclass: InvalidArgument is a BadRequest, AlreadyExists a Conflict, ...).
CLASSES = {
    400: (exceptions.BadRequest, exceptions.InvalidArgument),
    404: (exceptions.NotFound, exceptions.NotFound),
    409: (exceptions.Conflict, exceptions.AlreadyExists),
    429: (exceptions.TooManyRequests, exceptions.ResourceExhausted),
    503: (exceptions.ServiceUnavailable, exceptions.ServiceUnavailable),
    504: (exceptions.GatewayTimeout, exceptions.DeadlineExceeded),
}


def raised(response: requests.Response, status: int) -> tuple[exceptions.GoogleAPICallError, str]:
    """The exception google-api-core makes of `response`, checked against the body's Status;
    with the gateway's message."""
    message = error_message(response, status)  # the google.rpc.Status shape, exactly
    exc = exceptions.from_http_response(response)
    assert exc.code == status
    assert exc.message.endswith(f": {message}"), exc.message  # "POST <url>: <message>"
    rpc = response.json()["error"]["status"]
    from_rpc = exceptions.from_grpc_status(getattr(grpc.StatusCode, rpc), message)
    if status in CLASSES:
        http_class, rpc_class = CLASSES[status]
        assert type(exc) is http_class, type(exc)
        assert type(from_rpc) is rpc_class and issubclass(rpc_class, http_class)
    if status in (429, 503):
        assert response.headers["Retry-After"]
    return exc, message


def post(server, path: str, body: dict | bytes) -> requests.Response:
    if isinstance(body, bytes):
        return requests.post(server.url + path, data=body, timeout=120)
    return requests.post(server.url + path, json=body, timeout=120)


@pytest.mark.parametrize(
    "path",
    [f"{VERTEX}:predict", f"{VERTEX}:explain", f"{VERTEX}:rawPredict", f"{ML}:predict"],
)
def test_400_names_the_instance(gateway, path):
    r = post(gateway, path, payload(b"not an image at all"))
    _, message = raised(r, 400)
    assert message.startswith("instances[0].input_image_bytes"), message


def test_400_schema_errors_name_the_field(gateway, small):
    _, message = raised(post(gateway, f"{VERTEX}:predict", {"instances": [{"nope": 1}]}), 400)
    assert "instances[0]" in message
    body = {**payload(small), "signature_name": "x"}  # not a Vertex PredictRequest field
    _, message = raised(post(gateway, f"{VERTEX}:predict", body), 400)
    assert "signature_name" in message and "Extra inputs are not permitted" in message
    body = {**payload(small), "explanationSpecOverride": {"parameters": {}}}
    _, message = raised(post(gateway, f"{VERTEX}:explain", body), 400)
    assert message.startswith("explanationSpecOverride is not supported")


@pytest.mark.parametrize(
    ("method", "path", "words"),
    [
        ("POST", "/v1/projects/demo/models/nope:predict", "Servable not found"),
        ("POST", f"{ML}/versions/v9:predict", "Could not find version 9"),
        ("POST", f"{ML}/versions/v9:explain", "Could not find version 9"),
        (
            "POST",
            "/v1/projects/demo/locations/us-central1/endpoints/nope:predict",
            "Endpoint `projects/demo/locations/us-central1/endpoints/nope` not found",
        ),
        (
            "GET",
            "/v1/projects/demo/locations/us-central1/endpoints/nope",
            "(this gateway serves endpoint saccader)",
        ),
        ("GET", f"{JOBS}/nope", "not found"),
    ],
)
def test_404_unknown_model_version_endpoint_or_job(gateway, small, method, path, words):
    if method == "GET":
        r = requests.get(gateway.url + path, timeout=30)
    else:
        r = post(gateway, path, payload(small))
    _, message = raised(r, 404)
    assert words in message, message


def test_404_unknown_deployed_model(gateway, small):
    body = {**payload(small), "deployedModelId": "123"}
    _, message = raised(post(gateway, f"{VERTEX}:explain", body), 404)
    assert message.startswith("DeployedModel 123 not found") and "saccader-v1" in message


def test_404_configured_endpoint_and_location(tight):
    base = "/v1/projects/demo/locations"
    ok = requests.get(f"{tight.url}{base}/europe-west4/endpoints/4242", timeout=30)
    assert ok.status_code == 200 and ok.json()["deployedModels"][0]["id"] == "saccader-v1"
    for path in (f"{base}/us-central1/endpoints/4242", f"{base}/europe-west4/endpoints/saccader"):
        _, message = raised(requests.get(tight.url + path, timeout=30), 404)
        assert message.endswith("(this gateway serves endpoint 4242 in europe-west4)"), message


def test_409_job_id_in_use(gateway):
    job = {
        "jobId": "taken",
        "predictionInput": {
            "dataFormat": "JSON",
            "inputPaths": [str(gateway.root / "in.jsonl")],
            "outputPath": str(gateway.root / "out"),
        },
    }
    first = post(gateway, JOBS, job)
    assert first.status_code == 200, first.text
    _, message = raised(post(gateway, JOBS, job), 409)
    assert "taken" in message and "exists" in message


def test_413_body_over_the_limit(tight):
    r = post(tight, "/v1/projects/demo/locations/europe-west4/endpoints/4242:predict", b"x" * 2000)
    message = error_message(r, 413)
    assert message == "request body of 2000 bytes is over the limit of 1024 bytes"
    exc = exceptions.from_http_response(r)
    # No api-core class has HTTP 413; the Status says INVALID_ARGUMENT, as Google's APIs do.
    assert type(exc) is exceptions.GoogleAPICallError and exc.code == 413
    assert exc.message.endswith(message) and r.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_429_queue_full(gateway, small):
    _, message = raised(post(gateway, f"{VERTEX}:predict", payload(small, small, small)), 429)
    assert message == "request queue is full (2 instances); retry shortly"


def test_429_too_many_explanations(gateway):
    rng = np.random.default_rng(2)
    photo = encode(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), "JPEG")
    body = payload(photo, method="integrated_gradients", steps=8, faithfulness=False)
    with ThreadPoolExecutor(1) as pool:
        with explainer_held(gateway) as explainer:  # the first one stays pending
            first = pool.submit(post, gateway, f"{ML}:explain", body)
            wait_until(lambda: explainer.pending == 1)
            refused = post(gateway, f"{ML}:explain", body)
        assert first.result().status_code == 200
    _, message = raised(refused, 429)
    assert message == "1 explanations are queued or running; retry later"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"{VERTEX}:predict"),
        ("POST", f"{VERTEX}:explain"),
        ("POST", f"{ML}:predict"),
        ("GET", VERTEX),
    ],
)
def test_503_model_failed_to_load(broken, small, method, path):
    if method == "GET":
        r = requests.get(broken.url + path, timeout=30)
    else:
        r = post(broken, path, payload(small))
    _, message = raised(r, 503)
    assert message.startswith("model failed to load:"), message


@pytest.mark.parametrize("verb", ["predict", "rawPredict"])
def test_504_deadline(tight, small, verb):
    path = f"/v1/projects/demo/locations/europe-west4/endpoints/4242:{verb}"
    _, message = raised(post(tight, path, payload(small)), 504)
    assert message.startswith("no answer") and "0.001 s" in message, message


@pytest.fixture(scope="module")
def client(gateway):
    return PredictionServiceClient(
        transport="rest",
        client_options={"api_endpoint": gateway.url},
        credentials=AnonymousCredentials(),
    )


def test_gapic_raises_not_found_with_the_message(client, small):
    nope = "projects/demo/locations/us-central1/endpoints/nope"
    with pytest.raises(exceptions.NotFound) as caught:
        client.predict(endpoint=nope, instances=[{"b64": b64(small)}])
    assert f"Endpoint `{nope}` not found" in caught.value.message


def test_gapic_raises_invalid_argument_with_the_message(client):
    """Over REST the class comes from the HTTP code: BadRequest, which InvalidArgument (what
    the gRPC transport raises for the same Status) subclasses."""
    endpoint = VERTEX.removeprefix("/v1/")
    with pytest.raises(exceptions.BadRequest) as caught:
        client.predict(endpoint=endpoint, instances=[{"b64": b64(b"nope")}])
    assert ": instances[0].input_image_bytes" in caught.value.message
    with pytest.raises(exceptions.BadRequest) as caught:
        client.explain(endpoint=endpoint, instances=[{"b64": "aGk="}], parameters={"steps": 3})
    assert ": parameters: steps applies to integrated_gradients" in caught.value.message
