"""The AI Platform (ml v1) jobs API as Google's own client drives it: google-api-python-client's
`ml` v1 client, built from the discovery document it ships, against a live gateway (tiny model).

Jobs create/get/list (filter, pageSize, list_next)/cancel, project scoping, the 400s a filter or
a page token can earn (the `HttpError` carries the gateway's message), output-only fields in a
create body, int64 fields as strings, and instance keys that are numbers, online and in batch.
Each test uses its own projects, so they share one gateway.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from contextlib import contextmanager

import pytest

from tests.batch_inputs import job_body, photo
from tests.conftest import b64
from tests.google_clients import every_page, ml_v1, refused
from tests.servers import live_server


@pytest.fixture(scope="module")
def gateway(gateway_settings, tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    settings = gateway_settings(
        jobs_local_root=root, jobs_db=root / "jobs.sqlite3", jobs_max_running=1
    )
    with live_server(settings) as server:
        server.root = root
        yield server


@pytest.fixture(scope="module")
def ml(gateway):
    return ml_v1(gateway.url)


def instance(seed: int, **key) -> dict:
    return {"input_image_bytes": {"b64": b64(photo(seed))}, **key}


def write_lines(gateway, name: str, lines: list[dict | str]) -> str:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    (gateway.root / name).write_text(text + "\n")
    return name


def create(ml, project: str, body: dict) -> dict:
    return ml.projects().jobs().create(parent=f"projects/{project}", body=body).execute()


def get(ml, project: str, job_id: str) -> dict:
    return ml.projects().jobs().get(name=f"projects/{project}/jobs/{job_id}").execute()


def cancel(ml, project: str, job_id: str) -> dict:
    name = f"projects/{project}/jobs/{job_id}"
    return ml.projects().jobs().cancel(name=name, body={}).execute()


def wait(ml, project: str, job_id: str, states: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (job := get(ml, project, job_id))["state"] not in states:
        assert time.monotonic() < deadline, f"job {job_id} stuck in {job['state']}"
        time.sleep(0.1)
    return job


def list_all(ml, project: str, page_size: int, **kw) -> tuple[list[str], int]:
    """Every page as the client's own pager (list_next) walks them: (job ids, pages)."""
    jobs = ml.projects().jobs()
    request = jobs.list(parent=f"projects/{project}", pageSize=page_size, **kw)
    found, pages = every_page(jobs, request, "jobs")
    return [j["jobId"] for j in found], pages


def typed(value) -> tuple[str, str]:
    """A value with its JSON type: 3 and "3" are different keys."""
    return type(value).__name__, repr(value)


def records(folder, prefix: str) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted(folder.glob(f"{prefix}-*"))
        for line in path.read_text().splitlines()
    ]


def test_create_get_list_cancel(ml, gateway):
    inputs = [write_lines(gateway, "three.jsonl", [instance(i, key=f"k{i}") for i in range(3)])]
    body = job_body("first", inputs, "out_first", batchSize=2, maxWorkerCount="1")
    created = create(ml, "crud", {**body, "labels": {"team": "vision"}})
    assert created["jobId"] == "first" and created["state"] in ("QUEUED", "RUNNING")
    assert created["labels"] == {"team": "vision"}
    # int64 fields are JSON strings, whichever way they came.
    given = created["predictionInput"]
    assert (given["batchSize"], given["maxWorkerCount"]) == ("2", "1")

    job = wait(ml, "crud", "first", {"SUCCEEDED", "FAILED"})
    assert job["state"] == "SUCCEEDED", job.get("errorMessage")
    output = job["predictionOutput"]
    assert (output["predictionCount"], output["errorCount"]) == ("3", "0")
    assert output["outputPath"] == "out_first" and isinstance(output["nodeHours"], float)
    assert job["predictionInput"]["batchSize"] == "2"
    assert job["createTime"] <= job["startTime"] <= job["endTime"]

    listed = ml.projects().jobs().list(parent="projects/crud").execute()
    assert [j["jobId"] for j in listed["jobs"]] == ["first"] and "nextPageToken" not in listed
    assert listed["jobs"][0] == job

    message = refused(lambda: cancel(ml, "crud", "first"), 400)
    assert message == "job first is already SUCCEEDED"
    message = refused(lambda: create(ml, "crud", body), 409)
    assert message == "job first already exists"
    message = refused(lambda: get(ml, "crud", "nope"), 404)
    assert message == "job nope not found"
    bad = job_body("second", inputs, "out_2", batchSize="many")
    assert "predictionInput.batchSize" in refused(lambda: create(ml, "crud", bad), 400)


def test_projects_see_only_their_own_jobs(ml, gateway):
    long = write_lines(gateway, "long.jsonl", [instance(i % 5, key=i) for i in range(20)])
    quick = write_lines(gateway, "quick.jsonl", [instance(1, key="q")])
    # One running slot (jobs_max_running=1): the long job holds it, its predictions held
    # until the end of the test, while the others wait, QUEUED.
    with predictions_held(gateway):
        _projects_see_only_their_own_jobs(ml, long, quick)
    assert wait(ml, "alpha", "long", {"CANCELLED", "SUCCEEDED", "FAILED"})["state"] == "CANCELLED"
    assert wait(ml, "alpha", "daily", {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"


@contextmanager
def predictions_held(gateway):
    """Every prediction of the live gateway waits until the block ends (the jobs' too)."""
    runner = gateway.app.state.plane.model("saccader").default().runner
    gate = threading.Event()
    real = runner.predict

    async def held(images, options):
        while not gate.is_set():
            await asyncio.sleep(0.01)
        return await real(images, options)

    runner.predict = held
    try:
        yield
    finally:
        gate.set()
        del runner.predict


def _projects_see_only_their_own_jobs(ml, long: str, quick: str) -> None:
    create(ml, "alpha", job_body("long", [long], "out_long", batchSize=2, maxWorkerCount=1))
    wait(ml, "alpha", "long", {"RUNNING"})
    create(ml, "alpha", job_body("daily", [quick], "out_alpha"))
    create(ml, "beta", job_body("daily", [quick], "out_beta"))  # ids are per project

    assert get(ml, "alpha", "daily")["predictionInput"]["outputPath"] == "out_alpha"
    assert get(ml, "beta", "daily")["predictionInput"]["outputPath"] == "out_beta"
    assert list_all(ml, "alpha", 10)[0] == ["daily", "long"]
    assert list_all(ml, "beta", 10)[0] == ["daily"]
    assert ml.projects().jobs().list(parent="projects/gamma").execute() == {"jobs": []}

    # Another project's job is exactly as unknown as a job that never was.
    assert refused(lambda: get(ml, "gamma", "daily"), 404) == "job daily not found"
    assert refused(lambda: get(ml, "beta", "long"), 404) == "job long not found"
    assert refused(lambda: cancel(ml, "beta", "long"), 404) == "job long not found"
    assert get(ml, "alpha", "long")["state"] == "RUNNING"

    assert cancel(ml, "beta", "daily") == {}
    assert get(ml, "beta", "daily")["state"] == "CANCELLED"
    assert get(ml, "alpha", "daily")["state"] == "QUEUED"  # the same id elsewhere: untouched
    cancel(ml, "alpha", "long")


def test_list_filters_and_pages(ml, gateway):
    good = write_lines(gateway, "good.jsonl", [instance(2, key="g")])
    kinds = {"ok_1": good, "bad_1": "missing-*.jsonl", "ok_2": good, "bad_2": "missing-*.jsonl"}
    for job_id, path in kinds.items():
        team = "vision" if job_id.endswith("1") else "audio"
        body = {**job_body(job_id, [path], f"out_{job_id}"), "labels": {"team": team}}
        create(ml, "lists", body)
        wait(ml, "lists", job_id, {"SUCCEEDED", "FAILED"})
    jobs = {j: get(ml, "lists", j) for j in kinds}
    assert [jobs[j]["state"] for j in kinds] == ["SUCCEEDED", "FAILED", "SUCCEEDED", "FAILED"]

    jobs_api = ml.projects().jobs()
    newest_first = list(reversed(kinds))
    assert list_all(ml, "lists", 1) == (newest_first, 4)  # one job a page
    assert list_all(ml, "lists", 1, filter="state=SUCCEEDED") == (["ok_2", "ok_1"], 2)
    assert list_all(ml, "lists", 1, filter="state!=FAILED")[0] == ["ok_2", "ok_1"]
    assert list_all(ml, "lists", 3, filter="labels.team=vision")[0] == ["bad_1", "ok_1"]
    since = jobs["bad_1"]["createTime"]
    assert list_all(ml, "lists", 1, filter=f'createTime>"{since}"')[0] == ["bad_2", "ok_2"]
    assert list_all(ml, "lists", 2, filter=f"createTime<={since} AND state=FAILED")[0] == ["bad_1"]
    assert list_all(ml, "lists", 5, filter="state=SUCCEEDED AND labels.team=audio")[0] == ["ok_2"]
    assert list_all(ml, "lists", 5, filter="jobId:bad* AND state:FAILED")[0] == ["bad_2", "bad_1"]
    running = jobs_api.list(parent="projects/lists", filter="state=RUNNING").execute()
    assert running == {"jobs": []}

    # A job created between two pages shifts nothing: no job twice, none skipped.
    first = jobs_api.list(parent="projects/lists", pageSize=1, filter="state=SUCCEEDED").execute()
    create(ml, "lists", job_body("ok_3", [good], "out_ok_3"))
    wait(ml, "lists", "ok_3", {"SUCCEEDED"})
    rest = jobs_api.list(
        parent="projects/lists", pageSize=5, filter="state=SUCCEEDED",
        pageToken=first["nextPageToken"],
    ).execute()  # fmt: skip
    assert [j["jobId"] for j in first["jobs"] + rest["jobs"]] == ["ok_2", "ok_1"]

    # A page token is for the project and the filter it came with.
    token = first["nextPageToken"]
    other_filter = lambda: jobs_api.list(  # noqa: E731
        parent="projects/lists", filter="state=FAILED", pageToken=token
    ).execute()
    assert "pageToken: issued for another project or filter" in refused(other_filter, 400)
    other_project = lambda: jobs_api.list(  # noqa: E731
        parent="projects/crud", filter="state=SUCCEEDED", pageToken=token
    ).execute()
    assert "pageToken: issued for another project or filter" in refused(other_project, 400)
    respelt = jobs_api.list(
        parent="projects/lists", filter='state = "SUCCEEDED"', pageToken=token
    ).execute()
    assert [j["jobId"] for j in respelt["jobs"]] == ["ok_1"]  # the same filter, spelt otherwise
    forged = lambda: jobs_api.list(parent="projects/lists", pageToken="eyJ4Ijox").execute()  # noqa: E731
    assert refused(forged, 400) == "pageToken: not a token this server issued"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("state=SUCCEEDED OR state=FAILED", "filter: 'OR' is not supported"),
        ("state=SUCCEEDED and labels.team=vision", "write AND in capitals"),
        ("jobType=PREDICTION", "filter: field 'jobType' is not supported"),
        ("state=DONE", "filter: state: unknown state 'DONE'"),
        ("createTime>yesterday", "filter: createTime: 'yesterday' is not an RFC 3339 time"),
        ("state>FAILED", "filter: state does not support '>'"),
    ],
)
def test_a_filter_it_does_not_support_is_a_400_naming_it(ml, text, words):
    call = ml.projects().jobs().list(parent="projects/filters", filter=text).execute
    assert words in refused(call, 400)


def test_output_only_fields_in_a_create_body_are_ignored(ml, gateway):
    inputs = [write_lines(gateway, "copy.jsonl", [instance(3, key="c")])]
    create(ml, "copies", job_body("original", inputs, "out_original", batchSize=8))
    done = wait(ml, "copies", "original", {"SUCCEEDED", "FAILED"})
    assert done["state"] == "SUCCEEDED" and done["predictionOutput"]["predictionCount"] == "1"

    # The answer, sent back under a new id (what `gcloud ... --format=json` users do).
    copy = {**done, "jobId": "copy", "etag": "YWJj", "jobPosition": "0", "trainingOutput": {}}
    copy["predictionInput"] = {**done["predictionInput"], "outputPath": "out_copy"}
    created = create(ml, "copies", copy)
    assert created["state"] in ("QUEUED", "RUNNING") and created["createTime"] > done["endTime"]
    assert "endTime" not in created and "errorMessage" not in created
    assert created["predictionOutput"]["predictionCount"] == "0"
    assert created["predictionInput"]["batchSize"] == "8"
    assert wait(ml, "copies", "copy", {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"

    unknown = {**job_body("unknown", inputs, "out_u"), "trainingInput": {"scaleTier": "BASIC"}}
    assert "trainingInput" in refused(lambda: create(ml, "copies", unknown), 400)


def test_number_keys_are_echoed_in_a_batch_job(ml, gateway):
    lines = [
        instance(0, key=3),
        instance(1, key="3"),
        instance(2, key=7.5),
        instance(3, key=-12345678901234567890),
        instance(4),
        {"input_image_bytes": {"b64": "@@@"}, "key": 9},  # invalid_image
        json.dumps({"input_image_bytes": 3, "key": 11}),  # invalid_instance
        json.dumps({"input_image_bytes": {"b64": b64(photo(5))}, "key": True}),  # not a key
    ]
    inputs = [write_lines(gateway, "keys.jsonl", lines)]
    create(ml, "keys", job_body("keys", inputs, "out_keys", batchSize=3))
    job = wait(ml, "keys", "keys", {"SUCCEEDED", "FAILED"})
    assert job["state"] == "SUCCEEDED", job.get("errorMessage")
    assert (job["predictionOutput"]["predictionCount"], job["predictionOutput"]["errorCount"]) == (
        "5",
        "3",
    )

    out = gateway.root / "out_keys"
    keys = [r.get("key") for r in records(out, "prediction.results")]
    assert sorted(map(typed, keys)) == sorted(
        map(typed, [3, "3", 7.5, -12345678901234567890, None])
    )
    errors = {e["line"]: e for e in records(out, "prediction.errors_stats")}
    assert (errors[6]["key"], errors[6]["kind"]) == (9, "invalid_image")
    assert (errors[7]["key"], errors[7]["kind"]) == (11, "invalid_instance")
    assert (errors[8]["key"], errors[8]["kind"]) == (None, "invalid_instance")
    assert "key" in errors[8]["error"]


def test_number_keys_are_echoed_online(ml):
    instances = [instance(0, key=3), instance(1, key="3"), instance(2, key=2.5), instance(3)]
    name = "projects/keys/models/saccader"
    answer = ml.projects().predict(name=name, body={"instances": instances}).execute()
    keys = [p.get("key") for p in answer["predictions"]]
    assert keys == [3, "3", 2.5, None]
    assert [type(k) for k in keys] == [int, str, float, type(None)]

    for bad in (True, [3], {"k": 3}, "x" * 257):
        body = {"instances": [instance(0, key=bad)]}
        call = ml.projects().predict(name=name, body=body).execute
        assert "instances[0].key" in refused(call, 400)


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("v2", "predictionInput.versionName: v2 is version 2; this gateway serves 1"),
        ("canary", "predictionInput.versionName: 'canary' is not a version or a version label"),
        ("9" * 5000, "predictionInput.versionName: Failed to convert version"),
    ],
    ids=["v2", "canary", "5000-digits"],
)
def test_a_job_for_another_version_is_refused_not_run_on_this_one(ml, gateway, version, message):
    inputs = [write_lines(gateway, "v.jsonl", [instance(0, key="v")])]
    body = job_body(
        f"other_{version[:8]}",
        inputs,
        f"out_{version[:8]}",
        versionName=f"projects/p/models/saccader/versions/{version}",
    )
    assert message in refused(lambda: create(ml, "p", body), 400)
    body["predictionInput"]["versionName"] = "projects/p/models/saccader/versions/v1"
    assert create(ml, "p", body)["state"] in ("QUEUED", "RUNNING", "SUCCEEDED")
