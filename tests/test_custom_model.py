"""A model trained on a user's labels, through every surface of a running gateway: a training
job on the gateway's jobs API trains it while the gateway serves the ImageNet model, and it is
served beside it without a restart; its evaluation reads in Vertex's shape (HTTP and GAPIC);
then TF Serving's, AI Platform's and Vertex AI's predict, the tensor path, explanations
(every family, SAG, the user's own boxes), a batch job naming the model, the Python client and
`glimpse predict` all answer with the user's labels and no invented synset."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.batch_inputs import wait_state
from tests.conftest import body
from tests.servers import live_server, wait_until
from tests.test_training import COLOURS, _dataset

LABELS = sorted(COLOURS)


JOBS = "/v1/projects/demo/jobs"
LOCATION = "projects/demo/locations/europe-west4"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_export, gateway_settings):
    """A gateway on a model base holding the tiny ImageNet model; `colours` is trained on it
    through the jobs API (`trainingInput.args` = glimpse train's) while it serves. Yields
    (gateway, photo folder, the finished job, seconds from SUCCEEDED to AVAILABLE)."""
    tmp = tmp_path_factory.mktemp("custom")
    base = tmp / "models"
    (base / "saccader").mkdir(parents=True)
    (base / "saccader" / "1").symlink_to(tiny_export, target_is_directory=True)
    _dataset(tmp)
    settings = gateway_settings(
        model_dir=base,
        jobs_db=tmp / "jobs.sqlite3",
        jobs_local_root=tmp,
        model_poll_s=0.5,
        feature_cache=str(tmp / "cache"),
    )
    with live_server(settings) as gw:
        assert httpx.get(f"{gw.url}/v1/models").json()["models"] == ["saccader"]
        args = ["import.csv", "--model-name", "colours", "--seed", "0", "--backbone", "tiny"]
        _create(gw, "train_colours", args)
        job = wait_state(gw.url + JOBS, "train_colours", {"SUCCEEDED", "FAILED", "CANCELLED"})
        assert job["state"] == "SUCCEEDED", job.get("errorMessage")
        published = time.monotonic()

        def available() -> bool:
            r = httpx.get(f"{gw.url}/v1/models/colours")
            return r.status_code == 200 and r.json()["model_version_status"][0]["state"] == (
                "AVAILABLE"
            )

        wait_until(available, timeout=30)
        yield gw, tmp / "photos", job, time.monotonic() - published


def _create(gw, job_id: str, args: list[str]) -> dict:
    answer = httpx.post(gw.url + JOBS, json={"jobId": job_id, "trainingInput": {"args": args}})
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture
def red(served) -> bytes:
    return (served[1] / "red0.png").read_bytes()


def _post(gw, path: str, payload: dict) -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", json=payload, timeout=120)


def _check_labels(prediction: dict) -> None:
    assert prediction["top_class"]["label"] in LABELS
    assert prediction["top_class"]["synset"] == ""
    assert [c["label"] for c in prediction["top_k"]] and len(prediction["top_k"]) <= 3
    assert {c["label"] for c in prediction["top_k"]} <= set(LABELS)
    assert prediction["full_image"]["label"] in LABELS
    assert set(prediction["class_names"]) <= set(LABELS)


def test_a_training_job_is_served_beside_the_imagenet_model_without_a_restart(served):
    from typer.testing import CliRunner

    from service.batch.cli import batch_app

    gw, photos, job, seconds = served
    assert httpx.get(f"{gw.url}/v1/models").json()["models"] == ["colours", "saccader"]
    assert seconds < 30
    out = job["trainingOutput"]
    assert out["builtInAlgorithmOutput"]["modelPath"] == "colours/1"
    assert out["completedTrialCount"] == "1" and sum(out["splits"].values()) == 24
    assert out["stage"] == "evaluation" and out["photosDone"] == out["photosTotal"]
    assert (photos.parent / "models" / "colours" / "1" / "saved_model.pb").is_file()
    listed = CliRunner().invoke(batch_app, ["list", "--url", gw.url, "--project", "demo"])
    assert "train_colours\tSUCCEEDED\ttraining: colours/1" in listed.output, listed.output


def test_the_evaluation_reads_in_vertex_shape_over_http_and_through_gapic(served):
    from google.api_core import exceptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.aiplatform_v1 import ModelServiceClient

    gw = served[0]
    model = f"{LOCATION}/models/colours"
    listed = httpx.get(f"{gw.url}/v1/{model}/evaluations").json()["modelEvaluations"]
    assert [e["name"] for e in listed] == [f"{model}/evaluations/1"]
    evaluation = httpx.get(f"{gw.url}/v1/{model}/evaluations/1").json()
    assert evaluation == listed[0]
    assert evaluation["metricsSchemaUri"].endswith("classification_metrics_1.0.0.yaml")
    specs = evaluation["metrics"]["confusionMatrix"]["annotationSpecs"]
    assert [s["displayName"] for s in specs] == LABELS
    assert set(evaluation["metadata"]["glimpseTop1"]) == {"1", "2", "4", "6"}
    client = ModelServiceClient(
        transport="rest",
        client_options={"api_endpoint": gw.url},
        credentials=AnonymousCredentials(),
    )
    got = client.get_model_evaluation(name=f"{model}/evaluations/1")
    assert got.name == f"{model}/evaluations/1"
    assert got.metrics_schema_uri == evaluation["metricsSchemaUri"]
    assert [e.name for e in client.list_model_evaluations(parent=model)] == [got.name]
    with pytest.raises(exceptions.NotFound):
        client.get_model_evaluation(name=f"{model}/evaluations/2")


def test_a_cancelled_training_job_writes_no_version(served):
    gw, photos, _, _ = served
    args = ["import.csv", "--model-name", "shades", "--backbone", "tiny"]
    _create(gw, "train_shades", args)
    wait_state(gw.url + JOBS, "train_shades", {"PREPARING", "RUNNING"})
    assert httpx.post(f"{gw.url}{JOBS}/train_shades:cancel").json() == {}
    job = wait_state(gw.url + JOBS, "train_shades", {"SUCCEEDED", "FAILED", "CANCELLED"})
    assert job["state"] == "CANCELLED", job
    assert job["errorMessage"] == "cancelled; no version was written"
    shades = photos.parent / "models" / "shades"
    assert not shades.exists() or not any(shades.iterdir())


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/colours:predict",
        "/v1/models/colours/versions/1:predict",
        "/v1/projects/p/models/colours:predict",
        "/v1/projects/p/locations/l/endpoints/colours:predict",
    ],
)
def test_every_predict_route_answers_with_the_users_labels(served, red, path):
    r = _post(served[0], path, body(red))  # top_k left out: every one of the 3 labels
    assert r.status_code == 200, r.text[:300]
    _check_labels(r.json()["predictions"][0])


def test_top_k_above_the_number_of_labels_is_a_400_naming_the_limit(served, red):
    r = _post(served[0], "/v1/models/colours:predict", body(red, top_k=4))
    assert r.status_code == 400 and "top_k" in r.json()["error"]


def test_the_tensor_path_and_metadata(served, red):
    gw = served[0]
    payload = {"signature_name": "serving_default", "instances": [{"b64": "x"}]}
    import base64

    payload["instances"] = [{"input_image_bytes": {"b64": base64.b64encode(red).decode()}}]
    r = _post(gw, "/v1/models/colours:predict", payload)
    assert r.status_code == 200, r.text[:300]
    assert set(r.json()["predictions"][0]["class_names"]) <= set(LABELS)
    meta = httpx.get(f"{gw.url}/v1/models/colours/metadata").json()
    assert "serving_default" in json.dumps(meta)


def test_the_users_own_glimpse_boxes(served, red):
    boxes = [[0, 0, 64, 64], [100, 100, 164, 164]]
    r = _post(served[0], "/v1/models/colours:predict", body(red, glimpse_boxes=boxes))
    assert r.status_code == 200, r.text[:300]
    prediction = r.json()["predictions"][0]
    _check_labels(prediction)
    assert [g["box"] for g in prediction["glimpses"]][0]["ymax"] == 64


@pytest.mark.parametrize("method", ["glimpses", "sag", "integrated_gradients", "grad_cam"])
def test_explanations_name_the_users_labels(served, red, method):
    r = _post(served[0], "/v1/models/colours:explain", body(red, method=method, faithfulness=False))
    assert r.status_code == 200, r.text[:300]
    [e] = r.json()["explanations"][0]["attributions_by_label"]
    assert e["label_name"] in LABELS and e["synset"] == ""
    assert 0 <= e["label_index"] < 3


def test_a_label_index_beyond_the_users_labels_is_a_400(served, red):
    r = _post(served[0], "/v1/models/colours:explain", body(red, label_index=3))
    assert r.status_code == 400
    assert "3 is not a class of this model (it has 3: 0..2)" in r.json()["error"]


def test_a_batch_job_and_the_python_client_on_the_model(served, red):
    from glimpse_client import Client

    gw, photos, _, _ = served
    root = photos.parent
    lines = [json.dumps({"input_image_bytes": {"b64": body(red)["instances"][0][
        "input_image_bytes"]["b64"]}, "key": f"k{i}"}) for i in range(3)]  # fmt: skip
    (root / "in.jsonl").write_text("\n".join(lines) + "\n")
    with Client(gw.url, model="colours", project="p") as client:
        prediction = client.predict(red, top_k=3)
        assert prediction.top_class.label in LABELS and prediction.top_class.synset == ""
        client.submit_job("in.jsonl", "out", "colours_job", num_glimpses=2, top_k=2)
        job = client.wait_job("colours_job", timeout=120, poll_interval=0.1)
    assert job.succeeded, job.body
    rows = [
        json.loads(line)
        for path in sorted((root / "out").glob("prediction.results-*"))
        for line in path.read_text().splitlines()
    ]
    assert len(rows) == 3
    for row in rows:
        assert row["top_class"]["label"] in LABELS and row["key"].startswith("k")


def test_glimpse_predict_prints_the_users_label(served):
    gw, photos, _, _ = served
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "predict", str(photos / "red0.png"),
         "--url", gw.url, "--model", "colours"],
        capture_output=True, text=True, timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "80", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert any(label in done.stdout for label in LABELS)
    assert "()" not in done.stdout


def test_the_demo_picks_the_model_and_shows_its_labels(served, page):
    """The demo's model picker: the user's model answers with its own three labels (the
    page leaves top_k at the model's own when the field is untouched)."""
    from playwright.sync_api import expect

    from tests.test_demo_browser import open_demo, wait_done

    gw, photos, _, _ = served
    open_demo(page, gw.url)
    expect(page.locator("#model-row")).to_be_visible()
    page.select_option("#model", "colours")
    page.set_input_files("#photo", str(photos / "green0.png"))
    wait_done(page)
    assert page.locator("#top-class").inner_text() in LABELS
    expect(page.locator("#top-k-list li")).to_have_count(3)
    expect(page.locator("#error")).to_be_hidden()


def _v2_top_classes(gw, photo: bytes, model: str) -> dict[str, tuple[str, int]]:
    """(class name, class) over v2 with Triton's clients: HTTP with JSON data (base64 text),
    HTTP with binary data, and gRPC."""
    import base64

    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    def top(result) -> tuple[str, int]:
        name = result.as_numpy("class_names").reshape(-1)[0]  # str in JSON, bytes in binary
        text = name.decode() if isinstance(name, bytes) else str(name)
        return text, int(result.as_numpy("classes").reshape(-1)[0])

    answers = {}
    with httpclient.InferenceServerClient(gw.url.removeprefix("http://")) as client:
        for binary in (False, True):
            image = httpclient.InferInput("input_image_bytes", [1], "BYTES")
            value = photo if binary else base64.b64encode(photo)
            image.set_data_from_numpy(np.array([value], dtype=object), binary_data=binary)
            wanted = [
                httpclient.InferRequestedOutput(n, binary_data=binary)
                for n in ("class_names", "classes")
            ]
            result = client.infer(model, [image], outputs=wanted)
            answers["triton http " + ("binary" if binary else "json")] = top(result)
    with grpcclient.InferenceServerClient(f"127.0.0.1:{gw.app.state.grpc_port}") as client:
        image = grpcclient.InferInput("input_image_bytes", [1], "BYTES")
        image.set_data_from_numpy(np.array([photo], dtype=object))
        answers["triton grpc"] = top(client.infer(model, [image]))
    return answers


def test_every_v2_client_gets_the_class_predict_gives_on_every_model(served, red, tmp_path):
    """Open Inference Protocol v2 on each served model (the ImageNet one and the user's),
    with Triton's clients (HTTP JSON and binary, gRPC) here and kserve's (REST JSON and
    binary, gRPC, and its v1 client on :predict) in a process of their own
    (tests/kserve_clients.py says why)."""
    gw = served[0]
    photo = tmp_path / "red.png"
    photo.write_bytes(red)
    given = {
        "url": gw.url,
        "grpc": f"127.0.0.1:{gw.app.state.grpc_port}",
        "photo": str(photo),
        "models": ["saccader", "colours"],
    }
    script = [sys.executable, "-m", "tests.kserve_clients"]
    ran = subprocess.run(
        script, input=json.dumps(given), capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    kserve = json.loads(ran.stdout.strip().splitlines()[-1])
    assert kserve["rest_server_ready"] and kserve["grpc_server_ready"]
    for model in ("saccader", "colours"):
        predicted = _post(gw, f"/v1/models/{model}:predict", body(red)).json()["predictions"][0]
        expected = (predicted["top_class"]["label"], predicted["classes"][0])
        answers = _v2_top_classes(gw, red, model)
        got = kserve["models"][model]
        assert got["rest_model_ready"] and got["grpc_model_ready"]
        for client in ("rest_json", "rest_binary", "grpc", "v1"):
            answers[f"kserve {client}"] = (got[client]["class_name"], got[client]["class"])
        assert answers == dict.fromkeys(answers, expected), (model, answers)
        assert got["grpc"]["model_version"] == "1"  # kserve's REST parser drops the field
        if model == "colours":
            assert expected[0] in LABELS
    assert kserve["rest_unknown_model"]["status"] == 404
    assert "nope" in kserve["rest_unknown_model"]["message"]
    assert kserve["grpc_unknown_model"]["code"] == "NOT_FOUND"
    assert "nope" in kserve["grpc_unknown_model"]["message"]
