"""Versions and version labels as clients use them, against a live gateway (tiny model).

AI Platform's side through Google's own client (google-api-python-client's `ml` v1, built from
the discovery document it ships): predict on the model and on version names (`v1`, `1`, a
label), explain on a label, models.get, versions.get and versions.list with its pager, and
the refusals, whose `HttpError` carries the gateway's message. TF Serving's label routes
(status, metadata, :predict) with plain HTTP, as TF Serving's own clients send them.

The model directory holds versions 1 and 2 (the same export twice); the gateway serves 1, so
2 is listed but not served, and the label `next` names it.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.conftest import b64, encode
from tests.google_clients import every_page, ml_v1, refused
from tests.servers import live_server

MODEL = "projects/demo/models/saccader"
LABELS = {"stable": 1, "next": 2}


@pytest.fixture(scope="module")
def gateway(gateway_settings, tiny_export, tmp_path_factory):
    base = tmp_path_factory.mktemp("versions")
    for version in (1, 2):
        (base / "saccader").mkdir(exist_ok=True)
        (base / "saccader" / str(version)).symlink_to(tiny_export, target_is_directory=True)
    settings = gateway_settings(model_dir=base, model_version=1, version_labels=LABELS)
    with live_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def ml(gateway):
    return ml_v1(gateway.url)


@pytest.fixture(scope="module")
def photo() -> bytes:
    rng = np.random.default_rng(5)
    return encode(rng.integers(0, 255, (200, 260, 3), dtype=np.uint8), "JPEG")


def instances(photo: bytes, **parameters) -> dict:
    return {"instances": [{"input_image_bytes": {"b64": b64(photo)}}], "parameters": parameters}


def test_predict_on_the_model_and_on_every_version_name(ml, photo):
    names = [MODEL] + [f"{MODEL}/versions/{v}" for v in ("v1", "1", "stable")]
    answers = [
        ml.projects().predict(name=name, body=instances(photo, top_k=3)).execute() for name in names
    ]
    tops = [[c["index"] for c in a["predictions"][0]["top_k"]] for a in answers]
    assert len(tops[0]) == 3 and tops == [tops[0]] * 4


def test_explain_on_a_version_label(ml, photo):
    body = instances(photo, num_glimpses=2, faithfulness=False)
    answer = ml.projects().explain(name=f"{MODEL}/versions/stable", body=body).execute()
    [explanation] = answer["explanations"]
    [entry] = explanation["attributions_by_label"]
    assert entry["method"] == "glimpses" and len(entry["glimpses"]) == 2


def test_models_get(ml):
    model = ml.projects().models().get(name=MODEL).execute()
    assert model["name"] == MODEL and model["description"]
    default = model["defaultVersion"]
    assert default["name"] == f"{MODEL}/versions/v1"
    assert (default["isDefault"], default["state"], default["framework"]) == (
        True,
        "READY",
        "TENSORFLOW",
    )
    assert default["labels"] == {"stable": "version-label"}
    assert default["createTime"].endswith("Z") and default["runtimeVersion"]
    assert "deploymentUri" not in default  # no server paths


def test_versions_get_by_any_name(ml):
    versions = ml.projects().models().versions()
    by_name = [versions.get(name=f"{MODEL}/versions/{v}").execute() for v in ("v1", "1", "stable")]
    assert by_name == [by_name[0]] * 3 and by_name[0]["isDefault"] is True
    other = versions.get(name=f"{MODEL}/versions/next").execute()
    assert other["name"] == f"{MODEL}/versions/v2" and other["state"] == "UNKNOWN"
    assert "isDefault" not in other and other["labels"] == {"next": "version-label"}
    assert "serves version 1" in other["description"]


def test_versions_list_pages_with_the_clients_pager(ml):
    versions = ml.projects().models().versions()
    found, pages = every_page(versions, versions.list(parent=MODEL, pageSize=1), "versions")
    names = [v["name"] for v in found]
    assert names == [f"{MODEL}/versions/v1", f"{MODEL}/versions/v2"] and pages == 2
    everything = versions.list(parent=MODEL).execute()
    assert [v["name"] for v in everything["versions"]] == names
    assert "nextPageToken" not in everything


def test_refusals_carry_the_gateways_message(ml, photo):
    projects, versions = ml.projects(), ml.projects().models().versions()

    def predict(name: str):
        return lambda: projects.predict(name=name, body=instances(photo)).execute()

    assert refused(predict("projects/demo/models/nope"), 404) == (
        "Servable not found for request: Latest(nope)"
    )
    for name, number in (("v7", "7"), ("prod", "prod"), ("next", "2"), ("v2", "2")):
        assert refused(predict(f"{MODEL}/versions/{name}"), 404) == (
            f"Could not find version {number} of model saccader"
        ), name
    assert refused(lambda: versions.get(name=f"{MODEL}/versions/prod").execute(), 404) == (
        "Could not find version prod of model saccader"
    )
    assert refused(lambda: versions.get(name=f"{MODEL}/versions/v9").execute(), 404) == (
        "Could not find version 9 of model saccader"
    )
    get_other = ml.projects().models().get(name="projects/demo/models/other")
    assert refused(get_other.execute, 404) == "Servable not found for request: Latest(other)"
    bad_page = versions.list(parent=MODEL, pageToken="nope")
    assert refused(bad_page.execute, 400) == "pageToken: not a token this server issued"


def test_tf_serving_label_routes(gateway, photo):
    url = gateway.url + "/v1/models/saccader"
    ok = {"error_code": "OK", "error_message": ""}
    status = httpx.get(url + "/labels/stable").json()
    assert status == {
        "model_version_status": [{"version": "1", "state": "AVAILABLE", "status": ok}]
    }
    meta = httpx.get(url + "/labels/stable/metadata").json()
    assert meta["model_spec"] == {"name": "saccader", "signature_name": "", "version": "1"}
    payload = instances(photo, top_k=3)
    labelled = httpx.post(url + "/labels/stable:predict", json=payload, timeout=60)
    plain = httpx.post(url + ":predict", json=payload, timeout=60)
    assert labelled.status_code == plain.status_code == 200
    assert labelled.json()["predictions"][0]["top_k"] == plain.json()["predictions"][0]["top_k"]

    unknown = httpx.post(url + "/labels/prod:predict", json=payload, timeout=60)
    assert unknown.status_code == 400
    assert unknown.json() == {"error": "Unrecognized servable version label: prod"}
    unserved = httpx.get(url + "/labels/next/metadata")
    assert unserved.status_code == 404
    assert unserved.json() == {"error": "Could not find version 2 of model saccader"}
    assert httpx.get(url + "/versions/stable").status_code == 404  # a label is not a version
