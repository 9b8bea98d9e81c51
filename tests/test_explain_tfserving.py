""":explain when TF Serving serves predictions: the gateway explains from its own CPU copy."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.conftest import body, encode
from tests.servers import live_server

EXPLAIN = "/v1/models/saccader:explain"


@pytest.fixture(scope="module")
def photo() -> bytes:
    rng = np.random.default_rng(21)
    return encode(rng.integers(0, 255, (250, 330, 3), dtype=np.uint8), "JPEG")


def _explain(server, payload) -> dict:
    r = httpx.post(server.url + EXPLAIN, json=payload, timeout=120)
    assert r.status_code == 200, r.text[:300]
    return r.json()["explanations"][0]["attributions_by_label"][0]


def test_explain_answers_behind_tf_serving(gateway_settings, tfserving, gateway, photo):
    settings = gateway_settings(
        backend="tfserving", tfserving_address=f"127.0.0.1:{tfserving.port}"
    )
    with live_server(settings) as remote:
        predicted = httpx.post(
            remote.url + "/v1/models/saccader:predict", json=body(photo), timeout=60
        ).json()["predictions"][0]
        calls = tfserving.calls
        for method in ("glimpses", "integrated_gradients"):
            params = {"method": method, "faithfulness_steps": 4}
            if method == "integrated_gradients":
                params["steps"] = 4
            remote_e = _explain(remote, body(photo, **params))
            local_e = _explain(gateway, body(photo, **params))
            assert remote_e["label_index"] == local_e["label_index"]
            assert remote_e["example_score"] == pytest.approx(local_e["example_score"], rel=1e-5)
            assert remote_e["faithfulness"] == local_e["faithfulness"]
        assert tfserving.calls == calls  # explanations never went over gRPC
        # The glimpses explained are the ones TF Serving predicted with.
        glimpses = _explain(remote, body(photo, faithfulness=False))["glimpses"]
        assert [g["box"] for g in glimpses] == [g["box"] for g in predicted["glimpses"]]
        assert glimpses[0]["order"] == 1


def test_no_local_copy_is_503_naming_the_setting(gateway_settings, tfserving, photo, tmp_path):
    settings = gateway_settings(
        backend="tfserving", tfserving_address=f"127.0.0.1:{tfserving.port}", model_dir=tmp_path
    )
    with live_server(settings) as remote:
        assert (
            httpx.post(
                remote.url + "/v1/models/saccader:predict", json=body(photo), timeout=60
            ).status_code
            == 200
        )
        r = httpx.post(remote.url + EXPLAIN, json=body(photo), timeout=60)
        assert r.status_code == 503 and "GLIMPSE_MODEL_DIR" in r.json()["error"]


def test_explanations_are_of_the_served_version_only(
    gateway_settings, tfserving, tiny_export, photo, tmp_path
):
    """TF Serving serves version 1 while the gateway's local copy is version 2: a version's
    explanations need that version's copy, so one Vertex answer can never put version 2's
    explanation beside version 1's predictions."""
    import shutil

    shutil.copytree(tiny_export, tmp_path / "saccader" / "2")
    settings = gateway_settings(
        backend="tfserving", tfserving_address=f"127.0.0.1:{tfserving.port}", model_dir=tmp_path
    )
    vertex = "/v1/projects/p/locations/us-central1/endpoints/saccader:explain"
    with live_server(settings) as remote:
        r = httpx.post(remote.url + vertex, json=body(photo), timeout=60)
        assert r.status_code == 503, r.text
        message = r.json()["error"]["message"]
        assert message.startswith("no local copy of model saccader version 1 in the gateway")
