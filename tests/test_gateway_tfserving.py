"""The tfserving backend against a real gRPC server speaking TF Serving's protocol."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from tests.conftest import body, encode
from tests.predictions import assert_same_prediction
from tests.servers import live_server, wait_until
from tests.tfserving_server import TFServingServer

PREDICT = "/v1/models/saccader:predict"


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    rng = np.random.default_rng(11)
    return [
        encode(rng.integers(0, 255, (240 + 20 * i, 320, 3), dtype=np.uint8), "JPEG")
        for i in range(3)
    ]


@pytest.fixture(scope="module")
def remote_gateway(gateway_settings, tfserving):
    with live_server(
        gateway_settings(backend="tfserving", tfserving_address=f"127.0.0.1:{tfserving.port}")
    ) as server:
        yield server


def test_same_answers_as_the_embedded_backend(remote_gateway, gateway, photos, tfserving):
    calls = tfserving.calls
    remote = httpx.post(remote_gateway.url + PREDICT, json=body(*photos, top_k=3), timeout=60)
    local = httpx.post(gateway.url + PREDICT, json=body(*photos, top_k=3), timeout=60)
    assert remote.status_code == local.status_code == 200
    assert tfserving.calls > calls  # it really went over gRPC
    for r, e in zip(remote.json()["predictions"], local.json()["predictions"], strict=True):
        assert_same_prediction(r, e, where="policy glimpses")


def test_given_boxes_go_to_tf_serving_too(remote_gateway, gateway, photos, tfserving):
    """glimpse_boxes reach TF Serving as the serving_boxes signature, in the same micro-batch
    as requests without them, and answer as the embedded backend does."""
    boxes = [[0.0, 0.0, 120.0, 90.5], [100.0, 130.0, 224.0, 224.0]]
    calls = tfserving.calls
    given = body(*photos[:2], glimpse_boxes=boxes, top_k=3)
    remote = httpx.post(remote_gateway.url + PREDICT, json=given, timeout=60)
    local = httpx.post(gateway.url + PREDICT, json=given, timeout=60)
    assert remote.status_code == local.status_code == 200
    assert tfserving.calls > calls
    for r, e in zip(remote.json()["predictions"], local.json()["predictions"], strict=True):
        assert len(r["glimpses"]) == 2
        assert_same_prediction(r, e, where="given boxes")


def test_status_and_metadata_come_from_tf_serving(remote_gateway, gateway):
    for path in ("/v1/models/saccader", "/v1/models/saccader/metadata"):
        remote = httpx.get(remote_gateway.url + path).json()
        local = httpx.get(gateway.url + path).json()
        assert remote == local
    assert httpx.get(remote_gateway.url + "/v1/models/saccader/versions/2").status_code == 404
    assert (
        httpx.post(
            remote_gateway.url + "/v1/models/saccader/versions/2:predict",
            json={"instances": [{"b64": "aGk="}]},
        ).status_code
        == 404
    )


def test_unknown_model_on_the_server_keeps_the_gateway_unready(
    gateway_settings, tfserving, tmp_path
):
    """The only model the gateway serves (no other folder in its model base) is one TF
    Serving does not have."""
    settings = gateway_settings(
        backend="tfserving",
        tfserving_address=f"127.0.0.1:{tfserving.port}",
        model_name="other",
        model_dir=tmp_path,
    )
    with live_server(settings, ready=False) as server:
        deadline = time.monotonic() + 30
        while "failed" not in httpx.get(server.url + "/healthz/ready").text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = httpx.get(server.url + "/healthz/ready")
        assert r.status_code == 503 and "NOT_FOUND" in r.json()["error"]
        r = httpx.post(server.url + "/v1/models/other:predict", json={"instances": [{"b64": ""}]})
        assert r.status_code == 503 and "NOT_FOUND" in r.json()["error"]


def test_deadline_is_504(gateway_settings, tiny_export, photos):
    slow = TFServingServer("saccader", tiny_export)
    slow.start()
    try:
        settings = gateway_settings(
            backend="tfserving", tfserving_address=f"127.0.0.1:{slow.port}", request_timeout_s=1.0
        )
        with live_server(settings) as server:
            slow.delay_s = 3.0
            r = httpx.post(server.url + PREDICT, json=body(photos[0]), timeout=60)
            assert r.status_code == 504, r.text
            assert "DEADLINE_EXCEEDED" in r.json()["error"] or "within" in r.json()["error"]
            slow.delay_s = 0.0
            time.sleep(2.5)  # let the abandoned call finish on the server
            assert (
                httpx.post(server.url + PREDICT, json=body(photos[0]), timeout=60).status_code
                == 200
            )
    finally:
        slow.stop()


def test_server_gone_is_503_and_not_ready(gateway_settings, tiny_export, photos):
    doomed = TFServingServer("saccader", tiny_export)
    doomed.start()
    settings = gateway_settings(
        backend="tfserving", tfserving_address=f"127.0.0.1:{doomed.port}", tfserving_retries=1
    )
    with live_server(settings) as server:
        doomed.stop()
        r = httpx.post(server.url + PREDICT, json=body(photos[0]), timeout=60)
        assert r.status_code == 503 and "UNAVAILABLE" in r.json()["error"]
        assert r.headers["retry-after"] == "5"
        # Readiness caches its answer 2 s: polled until it says so.
        wait_until(lambda: httpx.get(server.url + "/healthz/ready").status_code == 503, 30)
        assert httpx.get(server.url + "/healthz/live").status_code == 200


def test_version_label(gateway_settings, tfserving, photos):
    address = f"127.0.0.1:{tfserving.port}"
    with live_server(
        gateway_settings(
            backend="tfserving", tfserving_address=address, model_version_label="stable"
        )
    ) as server:
        r = httpx.post(server.url + PREDICT, json=body(photos[0]), timeout=60)
        assert r.status_code == 200
        # A rollout moves the label; readiness follows it, and says when it names nothing.
        ready = lambda: httpx.get(server.url + "/healthz/ready")  # noqa: E731
        tfserving.labels["stable"] = 7
        try:  # readiness caches its answer 2 s: polled until it follows
            wait_until(lambda: ready().status_code == 503, timeout=30)
            assert "label stable names no version" in ready().json()["error"]
        finally:
            tfserving.labels["stable"] = tfserving.servable.version
        wait_until(lambda: ready().status_code == 200, timeout=30)
    settings = gateway_settings(
        backend="tfserving", tfserving_address=address, model_version_label="canary"
    )
    with live_server(settings, ready=False) as server:
        deadline = time.monotonic() + 30
        while "failed" not in httpx.get(server.url + "/healthz/ready").text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert (
            "Unrecognized servable version label: canary"
            in httpx.get(server.url + "/healthz/ready").json()["error"]
        )


def test_labels_are_the_gateways_or_tf_servings(gateway_settings, tfserving, photos):
    """A label the gateway configures resolves in the gateway; any other goes to TF Serving as
    ModelSpec.version_label, so TF Serving's own labels work (`stable` in its models.config
    here) and TF Serving refuses the ones it does not know."""
    settings = gateway_settings(
        backend="tfserving",
        tfserving_address=f"127.0.0.1:{tfserving.port}",
        version_labels={"prod": 1},
    )
    with live_server(settings) as server:
        tfs, aip = server.url + "/v1/models/saccader", server.url + "/v1/projects/p/models/saccader"
        for path in (
            tfs + "/labels/prod:predict",
            tfs + "/labels/stable:predict",
            aip + "/versions/prod:predict",
            aip + "/versions/stable:predict",
        ):
            assert httpx.post(path, json=body(photos[0]), timeout=60).status_code == 200, path
        status = httpx.get(tfs + "/labels/stable").json()
        assert [v["version"] for v in status["model_version_status"]] == ["1"]
        assert httpx.get(tfs + "/labels/stable/metadata").json()["model_spec"]["version"] == "1"

        r = httpx.post(tfs + "/labels/canary:predict", json=body(photos[0]), timeout=60)
        assert r.status_code == 400 and r.json() == {
            "error": "model server: INVALID_ARGUMENT: Unrecognized servable version label: canary"
        }
        r = httpx.post(aip + "/versions/canary:predict", json=body(photos[0]), timeout=60)
        assert r.status_code == 404
        assert r.json()["error"]["message"] == "Could not find version canary of model saccader"

        [version] = httpx.get(aip + "/versions").json()["versions"]
        assert version["name"] == "projects/p/models/saccader/versions/v1"
        assert (version["state"], version["labels"]) == ("READY", {"prod": "version-label"})
        assert "runtimeVersion" not in version  # TF Serving's own is not known here
