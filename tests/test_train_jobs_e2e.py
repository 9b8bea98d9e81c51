"""A training job end to end on a live gateway: `trainingInput.args` = `glimpse train`'s, the
tiny backbone (random weights: the scores mean nothing, the flow does) on generated photos;
the gateway serves the new model without a restart, and its evaluation reads in Vertex's
shape over HTTP and through google-cloud-aiplatform's own GAPIC client. A cancelled run
leaves no version. The API's refusals, queue and restarts: tests/test_train_jobs.py."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.batch_inputs import wait_state
from tests.conftest import body, encode
from tests.servers import live_server

pytestmark = pytest.mark.slow  # one real training run (~20 s on 2 cores) and a cancelled one

JOBS = "/v1/projects/demo/jobs"
# Five labels: the gateway's warm-up and default `top_k` are 5, which a model of fewer labels
# refuses (its max_top_k is its label count).
COLOURS = {
    "red": (200, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 40, 200),
    "yellow": (220, 210, 40),
    "grey": (128, 128, 128),
}
LOCATION = "projects/demo/locations/europe-west4"


def photo(rng: np.random.Generator, rgb: tuple[int, int, int]) -> bytes:
    pixels = np.clip(rng.normal(rgb, 25, (96, 128, 3)), 0, 255).astype(np.uint8)
    return encode(pixels)


def dataset(folder: Path, per_label: int = 6) -> str:
    """Solid colours with noise, as PNGs beside a CSV import file (no ML_USE: the split is
    assigned); returns the file's path relative to the jobs folder."""
    rng = np.random.default_rng(0)
    (folder / "photos").mkdir(parents=True)
    lines = []
    for label, rgb in COLOURS.items():
        for i in range(per_label):
            (folder / "photos" / f"{label}{i}.png").write_bytes(photo(rng, rgb))
            lines.append(f"photos/{label}{i}.png,{label}")
    (folder / "import.csv").write_text("\n".join(lines) + "\n")
    return f"{folder.name}/import.csv"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, gateway_settings, tiny_model_dir):
    root = tmp_path_factory.mktemp("train_jobs")
    models = root / "models"
    models.mkdir()
    (models / "saccader").symlink_to(tiny_model_dir / "saccader")
    settings = gateway_settings(
        model_dir=models,
        model_poll_s=0.5,
        jobs_db=root / "jobs.sqlite3",
        jobs_local_root=root,
        feature_cache=str(root / "cache"),
    )
    with live_server(settings) as server:
        yield server, root, dataset(root / "data")


def create(url: str, job_id: str, *args: str) -> dict:
    answer = httpx.post(url + JOBS, json={"jobId": job_id, "trainingInput": {"args": list(args)}})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_training_job_is_served_and_evaluated(gateway):
    server, root, csv = gateway
    args = (csv, "--model-name", "colours", "--seed", "0", "--backbone", "tiny")
    create(server.url, "train_colours", *args)
    job = wait_state(server.url + JOBS, "train_colours", {"SUCCEEDED", "FAILED", "CANCELLED"})
    assert job["state"] == "SUCCEEDED", job.get("errorMessage")
    out = job["trainingOutput"]
    assert out["builtInAlgorithmOutput"]["modelPath"] == "colours/1"
    assert out["completedTrialCount"] == "1" and sum(out["splits"].values()) == 30
    assert out["stage"] == "evaluation" and out["photosDone"] == out["photosTotal"]
    assert (root / "models" / "colours" / "1" / "saved_model.pb").is_file()
    from typer.testing import CliRunner

    from service.batch.cli import batch_app

    listed = CliRunner().invoke(batch_app, ["list", "--url", server.url, "--project", "demo"])
    assert "train_colours\tSUCCEEDED\ttraining: colours/1" in listed.output, listed.output

    deadline = time.monotonic() + 60  # the next poll finds it, then it loads and warms up
    while True:
        status = httpx.get(f"{server.url}/v1/models/colours")
        states = [v["state"] for v in status.json().get("model_version_status", [])]
        if states == ["AVAILABLE"]:
            break
        assert time.monotonic() < deadline, status.text
        time.sleep(0.2)
    red = photo(np.random.default_rng(9), COLOURS["red"])
    answer = httpx.post(f"{server.url}/v1/models/colours:predict", json=body(red), timeout=60)
    assert answer.status_code == 200, answer.text
    prediction = answer.json()["predictions"][0]
    assert prediction["top_class"]["label"] in COLOURS  # the user's labels, not ImageNet's
    assert prediction["top_class"]["synset"] == ""
    assert {c["label"] for c in prediction["top_k"]} == set(COLOURS)

    model = f"{LOCATION}/models/colours"
    listed = httpx.get(f"{server.url}/v1/{model}/evaluations").json()["modelEvaluations"]
    assert [e["name"] for e in listed] == [f"{model}/evaluations/1"]
    evaluation = httpx.get(f"{server.url}/v1/{model}/evaluations/1").json()
    assert evaluation == listed[0]
    assert evaluation["metricsSchemaUri"].endswith("classification_metrics_1.0.0.yaml")
    specs = evaluation["metrics"]["confusionMatrix"]["annotationSpecs"]
    assert [s["displayName"] for s in specs] == sorted(COLOURS)
    assert set(evaluation["metadata"]["glimpseTop1"]) == {"1", "2", "4", "6"}

    # Vertex's own client reads them (GAPIC, REST transport, the gateway as its endpoint).
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.aiplatform_v1 import ModelServiceClient

    client = ModelServiceClient(
        transport="rest",
        client_options={"api_endpoint": server.url},
        credentials=AnonymousCredentials(),
    )
    got = client.get_model_evaluation(name=f"{model}/evaluations/1")
    assert got.name == f"{model}/evaluations/1"
    assert got.metrics_schema_uri == evaluation["metricsSchemaUri"]
    assert got.metrics["auPrc"] == pytest.approx(evaluation["metrics"]["auPrc"])
    assert [e.name for e in client.list_model_evaluations(parent=model)] == [got.name]
    from google.api_core import exceptions

    with pytest.raises(exceptions.NotFound):
        client.get_model_evaluation(name=f"{model}/evaluations/2")


def test_a_cancelled_training_job_writes_no_version(gateway):
    server, root, csv = gateway
    create(server.url, "train_shades", csv, "--model-name", "shades", "--backbone", "tiny")
    wait_state(server.url + JOBS, "train_shades", {"PREPARING", "RUNNING"})
    assert httpx.post(f"{server.url}{JOBS}/train_shades:cancel").json() == {}
    job = wait_state(server.url + JOBS, "train_shades", {"SUCCEEDED", "FAILED", "CANCELLED"})
    assert job["state"] == "CANCELLED", job
    assert job["errorMessage"] == "cancelled; no version was written"
    assert not (root / "models" / "shades").exists() or not any(
        (root / "models" / "shades").iterdir()
    )
