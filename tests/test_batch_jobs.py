"""The gateway's AI Platform jobs API, over HTTP against a live gateway and storage emulator."""

from __future__ import annotations

import httpx
import pytest

from tests.batch_inputs import good_line, job_body, mixed_file, wait_state
from tests.errors import error_message
from tests.servers import live_server

JOBS = "/v1/projects/demo/jobs"


@pytest.fixture
def settings(gateway_settings, tmp_path):
    return gateway_settings(jobs_db=tmp_path / "jobs.sqlite3", jobs_local_root=tmp_path)


def test_create_get_list_and_errors(bucket, settings):
    text, goods, bads = mixed_file(0, 6)
    bucket.blob("in/a.jsonl").upload_from_string(text)
    inputs, out = [f"gs://{bucket.name}/in/*.jsonl"], f"gs://{bucket.name}/out"
    with live_server(settings) as gw:
        created = httpx.post(gw.url + JOBS, json=job_body("job_1", inputs, out, batchSize="4"))
        assert created.status_code == 200, created.text
        assert created.json()["state"] in ("QUEUED", "RUNNING")
        given = created.json()["predictionInput"]  # int64 fields are strings, as Google's
        assert (given["batchSize"], given["maxWorkerCount"]) == ("4", "4")
        job = wait_state(gw.url + JOBS, "job_1", {"SUCCEEDED", "FAILED"})
        assert job["state"] == "SUCCEEDED", job.get("errorMessage")
        output = job["predictionOutput"]
        assert (output["predictionCount"], output["errorCount"]) == (str(goods), str(bads))
        assert output["lineCount"] == str(goods + bads) and output["outputPath"] == out
        assert job["startTime"] and job["endTime"] and "errorMessage" not in job
        listed = httpx.get(gw.url + JOBS).json()["jobs"]
        assert [j["jobId"] for j in listed] == ["job_1"]
        names = {b.name for b in bucket.client.list_blobs(bucket.name, prefix="out/")}
        assert "out/prediction.results-00002-of-00003" in names  # 12 lines, 3 batches

        def error(response, status: int, words: str) -> None:
            assert words in error_message(response, status)

        error(httpx.post(gw.url + JOBS, json=job_body("job_1", inputs, out)), 409, "exists")
        error(httpx.get(f"{gw.url}{JOBS}/nope"), 404, "not found")
        error(httpx.post(gw.url + JOBS, json=job_body("9bad", inputs, out)), 400, "jobId")
        error(
            httpx.post(gw.url + JOBS, json=job_body("j2", ["/etc/passwd"], out)),
            400, "inputPaths[0]: local paths must be under",
        )  # fmt: skip
        error(
            httpx.post(gw.url + JOBS, json=job_body("j3", inputs, out, uri="gs://x/m")),
            400, "served model",
        )  # fmt: skip
        error(
            httpx.post(gw.url + JOBS, json=job_body("j4", inputs, out, dataFormat="TF_RECORD")),
            400, "dataFormat",
        )  # fmt: skip
        error(httpx.post(f"{gw.url}{JOBS}/job_1:cancel"), 400, "already SUCCEEDED")
        error(httpx.get(gw.url + JOBS, params={"pageToken": "x"}), 400, "pageToken")


def test_cancel_queued_and_running_jobs(tmp_path, settings):
    (tmp_path / "in.jsonl").write_text("\n".join(good_line(i) for i in range(400)) + "\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("earlier output stays")
    with live_server(settings) as gw:
        body = job_body("long", ["in.jsonl"], "out", batchSize=2, maxWorkerCount=1)
        assert httpx.post(gw.url + JOBS, json=body).status_code == 200
        queued = job_body("queued", ["in.jsonl"], "out2")
        assert httpx.post(gw.url + JOBS, json=queued).status_code == 200
        wait_state(gw.url + JOBS, "long", {"RUNNING"})
        assert httpx.get(f"{gw.url}{JOBS}/queued").json()["state"] == "QUEUED"

        assert httpx.post(f"{gw.url}{JOBS}/queued:cancel").json() == {}
        assert httpx.get(f"{gw.url}{JOBS}/queued").json()["state"] == "CANCELLED"
        assert httpx.post(f"{gw.url}{JOBS}/long:cancel").status_code == 200
        assert httpx.get(f"{gw.url}{JOBS}/long").json()["state"] in ("CANCELLING", "CANCELLED")
        job = wait_state(gw.url + JOBS, "long", {"CANCELLED", "SUCCEEDED", "FAILED"})
        assert job["state"] == "CANCELLED" and job["errorMessage"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]


def test_jobs_survive_a_restart(tmp_path, settings):
    from service.batch.job_resource import Job, PredictionInput, PredictionOutput
    from service.batch.job_store import JobStore
    from service.batch.spec import JobState

    (tmp_path / "in.jsonl").write_text("\n".join(good_line(i) for i in range(5)) + "\n")
    with live_server(settings) as gw:
        httpx.post(gw.url + JOBS, json=job_body("before", ["in.jsonl"], "out-before"))
        wait_state(gw.url + JOBS, "before", {"SUCCEEDED"})

    # The gateway died while these were running: one had attempts left, one had not.
    store = JobStore(settings.jobs_db)
    given = PredictionInput(data_format="JSON", input_paths=["in.jsonl"], output_path="out-x")
    for job_id, attempt in (("crashed_once", 1), ("crashed_often", 3)):
        store.insert(
            "demo",
            Job(
                job_id=job_id, state=JobState.RUNNING, prediction_input=given,
                prediction_output=PredictionOutput(output_path="out-x", attempt=attempt),
            ),
        )  # fmt: skip
    store.close()

    with live_server(settings) as gw:
        before = httpx.get(f"{gw.url}{JOBS}/before").json()
        assert (
            before["state"] == "SUCCEEDED" and before["predictionOutput"]["predictionCount"] == "5"
        )
        again = wait_state(gw.url + JOBS, "crashed_once", {"SUCCEEDED", "FAILED"})
        assert again["state"] == "SUCCEEDED" and again["predictionOutput"]["attempt"] == 2
        given_up = httpx.get(f"{gw.url}{JOBS}/crashed_often").json()
        assert given_up["state"] == "FAILED" and "3 times" in given_up["errorMessage"]
    assert (tmp_path / "out-x" / "prediction.results-00000-of-00001").is_file()


def test_graceful_shutdown_requeues_a_running_job(tmp_path, settings):
    (tmp_path / "in.jsonl").write_text("\n".join(good_line(i) for i in range(300)) + "\n")
    with live_server(settings) as gw:
        body = job_body("interrupted", ["in.jsonl"], "out", batchSize=2, maxWorkerCount=1)
        httpx.post(gw.url + JOBS, json=body)
        wait_state(gw.url + JOBS, "interrupted", {"RUNNING"})
    with live_server(settings) as gw:
        job = wait_state(gw.url + JOBS, "interrupted", {"SUCCEEDED", "FAILED"})
        assert job["state"] == "SUCCEEDED"
        assert job["predictionOutput"]["attempt"] == 1  # the shutdown did not count
        assert job["predictionOutput"]["predictionCount"] == "300"


def test_jobs_api_can_be_switched_off(gateway_settings):
    with live_server(gateway_settings(jobs_enabled=False)) as gw:
        response = httpx.post(gw.url + JOBS, json=job_body("j", ["gs://b/x"], "gs://b/o"))
        assert response.status_code == 404
