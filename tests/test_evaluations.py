"""Vertex AI's model evaluations over HTTP: one per version `glimpse train` evaluated, read
from `<version>/assets.extra/evaluation.json` (fast tier: the fake backend, written files)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import GatewaySettings
from tests.errors import error_message
from tests.fake_backend import FakeBackend

pytestmark = pytest.mark.fast

MODEL = "projects/demo/locations/europe-west4/models/colours"
BODY = {
    "metricsSchemaUri": (
        "gs://google-cloud-aiplatform/schema/modelevaluation/classification_metrics_1.0.0.yaml"
    ),
    "metrics": {
        "confusionMatrix": {
            "annotationSpecs": [
                {"id": "0", "displayName": "blue"},
                {"id": "1", "displayName": "red"},
            ],
            "rows": [[2, 0], [1, 1]],
        },
        "confidenceMetrics": [{"confidenceThreshold": 0.5, "precision": 0.75, "recall": 0.75}],
        "auPrc": 0.9,
        "logLoss": 0.4,
    },
    "createTime": "2026-01-02T03:04:05Z",
    "metadata": {"glimpseTop1": {"6": 0.75}, "fullImageTop1": 0.5, "perLabel": []},
}


def version(base: Path, number: int, evaluation: dict | str | None) -> None:
    folder = base / "colours" / str(number)
    (folder / "assets.extra").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"")
    if evaluation is not None:
        text = evaluation if isinstance(evaluation, str) else json.dumps(evaluation)
        (folder / "assets.extra" / "evaluation.json").write_text(text)


@pytest.fixture
def client(tmp_path):
    for number, body in ((1, BODY), (2, None), (3, {**BODY, "createTime": "later"}), (4, "{")):
        version(tmp_path, number, body)
    backend = FakeBackend(versions={"saccader": [1], "colours": [3]})
    settings = GatewaySettings(model_dir=tmp_path, log_format="text", jobs_enabled=False)
    with TestClient(create_app(settings, backend)) as c:
        deadline = time.monotonic() + 10
        while c.get("/healthz/startup").status_code != 200:  # both models discovered, loaded
            assert time.monotonic() < deadline
            time.sleep(0.005)
        yield c


def test_list_and_get_in_vertex_shape(client):
    listed = client.get(f"/v1/{MODEL}/evaluations")
    assert listed.status_code == 200, listed.text
    evaluations = listed.json()["modelEvaluations"]
    assert [e["name"] for e in evaluations] == [f"{MODEL}/evaluations/1", f"{MODEL}/evaluations/3"]
    first = evaluations[0]
    assert first == {**BODY, "name": f"{MODEL}/evaluations/1", "displayName": "colours v1"}
    assert "nextPageToken" not in listed.json()
    got = client.get(f"/v1/{MODEL}/evaluations/3").json()
    assert got["createTime"] == "later" and got["displayName"] == "colours v3"


def test_pages(client):
    """Keyset pages over the versions with an evaluation file; a page may come short (version
    4's file is unreadable), as Google's paging allows, and the walk ends without a token."""
    seen, params, pages = [], {"pageSize": 1}, 0
    while True:
        page = client.get(f"/v1/{MODEL}/evaluations", params=params).json()
        seen += [e["name"].rsplit("/", 1)[1] for e in page.get("modelEvaluations", [])]
        pages += 1
        if "nextPageToken" not in page:
            break
        params["pageToken"] = page["nextPageToken"]
    assert (seen, pages) == (["1", "3"], 3)
    bad = client.get(f"/v1/{MODEL}/evaluations", params={"pageToken": "x"})
    assert "pageToken" in error_message(bad, 400)
    assert "filter" in error_message(
        client.get(f"/v1/{MODEL}/evaluations", params={"filter": "x=1"}), 400
    )
    none = client.get("/v1/projects/demo/locations/europe-west4/models/saccader/evaluations")
    assert none.status_code == 200 and none.json() == {}


def test_missing_is_google_404(client):
    for path, words in [
        (f"{MODEL}/evaluations/2", "ModelEvaluation `" + MODEL + "/evaluations/2` not found"),
        (f"{MODEL}/evaluations/4", "evaluations/4` not found"),  # unreadable JSON
        (f"{MODEL}/evaluations/9", "evaluations/9` not found"),
        (f"{MODEL}/evaluations/v1", "evaluations/v1` not found"),
        ("projects/demo/locations/europe-west4/models/nope/evaluations/1", "serves colours"),
        ("projects/demo/locations/europe-west4/models/nope/evaluations", "models/nope` not"),
        ("projects/demo/locations/Bad_Place/models/colours/evaluations", "project or location"),
    ]:
        answer = client.get(f"/v1/{path}")
        assert words in error_message(answer, 404), answer.text
        assert answer.json()["error"]["status"] == "NOT_FOUND"


def test_one_location_when_configured(tmp_path):
    version(tmp_path, 1, BODY)
    settings = GatewaySettings(
        model_dir=tmp_path, log_format="text", jobs_enabled=False, vertex_location="us-east1"
    )
    backend = FakeBackend(versions={"saccader": [1], "colours": [1]})
    with TestClient(create_app(settings, backend)) as client:
        elsewhere = client.get(f"/v1/{MODEL}/evaluations/1")
        assert "in us-east1" in error_message(elsewhere, 404)
        here = client.get("/v1/projects/demo/locations/us-east1/models/colours/evaluations/1")
        assert here.status_code == 200
