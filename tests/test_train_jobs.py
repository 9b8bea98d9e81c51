"""Training jobs on the jobs API (`trainingInput.args` = `glimpse train`'s arguments).

The fast tier drives the API, the queue, cancel and restarts over the fake backend with a
stand-in for the Trainer (service/batch/train_job.py `train`), so nothing here loads
TensorFlow; tests/test_train_jobs_e2e.py trains for real (tiny backbone) on a live gateway.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from model_export.training.trainer import Cancelled, TrainingError
from service.app import create_app
from service.batch import train_job
from service.batch.job_resource import Job, TrainingInput, TrainingOutput, rfc3339
from service.batch.job_store import JobStore
from service.batch.spec import JobState
from service.settings import GatewaySettings
from tests.errors import error_message
from tests.fake_backend import FakeBackend

pytestmark = pytest.mark.fast

JOBS = "/v1/projects/demo/jobs"
LABELS = ("blue", "green", "red")


def import_file(root: Path, per_label: int = 8) -> str:
    """A CSV import file under the jobs folder (the photos need not exist: the stand-in
    trainer reads none); returns its path relative to the jobs folder."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    lines = [f"photos/{label}{i}.png,{label}" for label in LABELS for i in range(per_label)]
    (root / "data" / "import.csv").write_text("\n".join(lines) + "\n")
    return "data/import.csv"


def settings(tmp_path: Path, **overrides) -> GatewaySettings:
    (tmp_path / "models" / "saccader" / "1").mkdir(parents=True, exist_ok=True)
    return GatewaySettings(
        **{
            "model_dir": tmp_path / "models",
            "log_format": "text",
            "jobs_db": tmp_path / "jobs.sqlite3",
            "jobs_local_root": tmp_path,
            "feature_cache": str(tmp_path / "cache"),
            **overrides,
        }
    )


def training(job_id: str, *args: str, **extra) -> dict:
    return {"jobId": job_id, "trainingInput": {"args": list(args), **extra}}


class FakeTrainer:
    """Stands in for Trainer.run: reports progress, then waits for `gate` (or the cancel,
    which it honours as the Trainer does between batches), then returns a report."""

    def __init__(self):
        self.gate = threading.Event()
        self.fail: Exception | None = None
        self.specs: list = []

    def __call__(self, spec, on_progress, cancel):
        self.specs.append(spec)
        on_progress("view features", 16, 24)
        while not self.gate.wait(0.01):
            if cancel.is_set():
                raise Cancelled("training cancelled")
        if self.fail is not None:
            raise self.fail
        return SimpleNamespace(
            path=train_job.target_folder(spec),
            counts={"training": 18, "validation": 3, "test": 3},
            bad_lines=1,
            bad_images=[object()],
            duplicates=2,
        )


@pytest.fixture
def trainer(monkeypatch) -> FakeTrainer:
    fake = FakeTrainer()
    monkeypatch.setattr(train_job, "train", fake)
    yield fake
    fake.gate.set()


def wait_state(client: TestClient, job_id: str, states: set[str], timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"{JOBS}/{job_id}").json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.01)


def refused(client: TestClient, body: dict, words: str, status: int = 400) -> None:
    message = error_message(client.post(JOBS, json=body), status)
    assert words in message, message


def test_arguments_are_checked_at_create(tmp_path, trainer):
    csv = import_file(tmp_path)
    (tmp_path / "folder.csv").mkdir()
    with TestClient(create_app(settings(tmp_path), FakeBackend())) as client:
        name = ("--model-name", "colours")
        for args, words in [
            ((csv, *name, "--foo", "1", "--bar=2"), "unknown options --foo, --bar"),
            ((csv, *name, "--model-base", "/srv"), "--model-base: the gateway trains into"),
            ((csv, *name, "--cache-dir", "/tmp/c"), "--cache-dir: the gateway keeps its own"),
            ((csv, *name, "--runner", "beam"), "--runner beam"),
            ((csv, *name, "--", "--runner=DataflowRunner"), "pipeline options after `--`"),
            ((csv, *name, "other.csv"), "unexpected argument 'other.csv'"),
            ((csv,), "--model-name is required"),
            (name, "the import file (the first argument) is missing"),
            ((csv, *name, "--version", "0"), "--version: '0': a version is 1 or more"),
            ((csv, *name, "--seed", "x"), "--seed: 'x' is not a number"),
            ((csv, *name, "--backbone", "b7"), "--backbone: invalid choice: 'b7'"),
            ((csv, *name, "--max-bad-fraction", "2"), "--max-bad-fraction: '2': a fraction"),
            ((csv, "--model-name", "../up"), "model name '../up'"),
            (("/etc/passwd", *name), "the import file: local paths must be under the jobs"),
            (("nope.csv", *name), "the import file 'nope.csv': No such file"),
            (("folder.csv", *name), "the import file 'folder.csv': a folder, not a file"),
        ]:
            refused(client, training("t1", *args), f"trainingInput.args: {words}")
        refused(client, training("t1"), "trainingInput.args: List should have at least 1")
        refused(client, {"jobId": "t1"}, "either predictionInput or trainingInput")
        both = {
            **training("t1", csv, *name),
            "predictionInput": {
                "dataFormat": "JSON",
                "inputPaths": ["gs://b/i"],
                "outputPath": "o",
            },
        }
        refused(client, both, "either predictionInput or trainingInput")
        custom = training("t1", csv, *name, packageUris=["gs://b/p.tgz"], pythonModule="m")
        refused(client, custom, "packageUris, pythonModule: not supported")
        refused(client, training("t1", csv, *name, workers=3), "trainingInput.workers")
        # AI Platform's placement fields are accepted and ignored; int64s as strings.
        ignored = {
            "region": "europe-west4", "scaleTier": "BASIC", "masterType": "n1-standard-4",
            "runtimeVersion": "2.11", "pythonVersion": "3.7",
        }  # fmt: skip
        created = client.post(
            JOBS, json=training("t1", csv, *name, "--backbone", "tiny", **ignored)
        )
        assert created.status_code == 200, created.text
        job = created.json()
        assert job["trainingInput"] == {"args": [csv, *name, "--backbone", "tiny"], **ignored}
        assert job["state"] in ("QUEUED", "PREPARING", "RUNNING")
        assert "predictionInput" not in job
        assert job["trainingOutput"]["completedTrialCount"] == "0"
        refused(client, training("t1", csv, "--model-name", "other"), "exists", 409)


def test_a_model_name_or_version_that_clashes_is_refused(tmp_path, trainer):
    csv = import_file(tmp_path)
    with TestClient(create_app(settings(tmp_path), FakeBackend())) as client:
        clash = client.post(JOBS, json=training("t1", csv, "--model-name", "saccader"))
        message = error_message(clash, 400)
        assert "model 'saccader' exists (versions [1]) under the model base: pass" in message
        assert "--version 2" in message and str(tmp_path) not in message
        refused(
            client,
            training("t1", csv, "--model-name", "saccader", "--version", "1"),
            "saccader/1 exists: versions are immutable; pass --version 2",
        )
        # A version a queued or running job will write is taken too.
        ok = client.post(
            JOBS, json=training("t1", csv, "--model-name", "saccader", "--version", "2")
        )
        assert ok.status_code == 200, ok.text
        refused(
            client,
            training("t2", csv, "--model-name", "saccader", "--version", "2"),
            "job t1 (",
        )
        new = client.post(JOBS, json=training("t3", csv, "--model-name", "colours"))
        assert new.status_code == 200, new.text
        refused(client, training("t4", csv, "--model-name", "colours"), "will write colours")
        other = client.post(
            "/v1/projects/other/jobs",
            json=training("t5", csv, "--model-name", "colours", "--version", "1"),
        )
        assert "another job (" in error_message(other, 400)  # no other project's job id
        ok = client.post(
            JOBS, json=training("t6", csv, "--model-name", "colours", "--version", "2")
        )
        assert ok.status_code == 200, ok.text


def test_tf_serving_and_model_config_files(tmp_path, trainer):
    csv = import_file(tmp_path)
    tfs = settings(tmp_path, backend="tfserving", tfserving_address="127.0.0.1:1")
    with TestClient(create_app(tfs, FakeBackend())) as client:
        refused(client, training("t1", csv, "--model-name", "x"), "need GLIMPSE_BACKEND=embedded")
    base = tmp_path / "models"
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f' config {{ name: "saccader" base_path: "{base}/saccader" }}\n'
        f' config {{ name: "other" base_path: "{base}/elsewhere" }}\n'
        "}\n"
    )
    (base / "elsewhere" / "1").mkdir(parents=True)
    backend = FakeBackend(versions={"saccader": [1], "other": [1]})
    with TestClient(create_app(settings(tmp_path, model_config_file=config), backend)) as client:
        refused(
            client, training("t1", csv, "--model-name", "new"), "not in the gateway's model config"
        )
        refused(
            client,
            training("t1", csv, "--model-name", "other", "--version", "2"),
            "does not end in /other",
        )
        listed = training("t1", csv, "--model-name", "saccader", "--version", "2")
        assert client.post(JOBS, json=listed).status_code == 200
        trainer.gate.set()
        job = wait_state(client, "t1", {"SUCCEEDED", "FAILED"})
        assert job["state"] == "SUCCEEDED", job
        assert trainer.specs[0].model_base == base


def test_one_at_a_time_with_progress_cancel_and_output(tmp_path, trainer):
    csv = import_file(tmp_path)
    with TestClient(create_app(settings(tmp_path), FakeBackend())) as client:
        for job_id, version in (("first", "1"), ("second", "2"), ("third", "3")):
            args = (csv, "--model-name", "colours", "--version", version, "--seed", "7")
            assert client.post(JOBS, json=training(job_id, *args)).status_code == 200
        running = wait_state(client, "first", {"RUNNING"})
        progress = running["trainingOutput"]
        assert (progress["stage"], progress["photosDone"], progress["photosTotal"]) == (
            "view features", "16", "24",
        )  # fmt: skip
        assert progress["attempt"] == 1 and running["startTime"]
        assert client.get(f"{JOBS}/second").json()["state"] == "QUEUED"  # one at a time

        assert client.post(f"{JOBS}/second:cancel").json() == {}
        second = client.get(f"{JOBS}/second").json()
        assert (second["state"], second["errorMessage"]) == (
            "CANCELLED", "cancelled before it started"
        )  # fmt: skip
        assert client.post(f"{JOBS}/first:cancel").status_code == 200
        first = wait_state(client, "first", {"CANCELLED", "SUCCEEDED", "FAILED"})
        assert first["state"] == "CANCELLED" and "no version" in first["errorMessage"]
        assert "builtInAlgorithmOutput" not in first["trainingOutput"]

        wait_state(client, "third", {"RUNNING"})
        trainer.gate.set()
        third = wait_state(client, "third", {"SUCCEEDED", "FAILED"})
        assert third["state"] == "SUCCEEDED", third
        out = third["trainingOutput"]
        assert out["completedTrialCount"] == "1" and out["isBuiltInAlgorithmJob"] is True
        algorithm = out["builtInAlgorithmOutput"]
        assert algorithm["modelPath"] == "colours/3" and algorithm["framework"] == "TENSORFLOW"
        assert algorithm["pythonVersion"].startswith("3.")
        assert out["splits"] == {"training": 18, "validation": 3, "test": 3}
        assert (out["badLineCount"], out["badPhotoCount"], out["duplicateCount"]) == ("1", "1", "2")
        assert "errorMessage" not in third and third["endTime"]
        spec = trainer.specs[-1]
        assert (spec.model_name, spec.version, spec.seed) == ("colours", 3, 7)
        assert spec.model_base == tmp_path / "models"
        assert spec.import_file == str(tmp_path / csv)
        assert spec.cache_dir == str(tmp_path / "cache")
        filtered = client.get(JOBS, params={"filter": "state=CANCELLED"}).json()["jobs"]
        assert {j["jobId"] for j in filtered} == {"first", "second"}
        refused(client, {}, "jobId")  # the route still checks the body
        assert "already SUCCEEDED" in error_message(client.post(f"{JOBS}/third:cancel"), 400)


def test_a_run_that_fails_says_why(tmp_path, trainer):
    csv = import_file(tmp_path)
    (tmp_path / "one.csv").write_text("a.png,red\nb.png,red\nc.png,red\n")
    (tmp_path / "outside.csv").write_text(
        "".join(f"/etc/photos/{c}{i}.png,{c}\n" for c in LABELS for i in range(8))
    )
    trainer.gate.set()
    with TestClient(create_app(settings(tmp_path), FakeBackend())) as client:
        trainer.fail = TrainingError("labels 'red' (1) have fewer than 2 training photos")
        client.post(JOBS, json=training("bad_fit", csv, "--model-name", "a"))
        job = wait_state(client, "bad_fit", {"SUCCEEDED", "FAILED"})
        assert job["state"] == "FAILED"
        assert job["errorMessage"] == "labels 'red' (1) have fewer than 2 training photos"
        trainer.fail = None
        client.post(JOBS, json=training("one_label", "one.csv", "--model-name", "b"))
        job = wait_state(client, "one_label", {"SUCCEEDED", "FAILED"})
        assert job["state"] == "FAILED" and "one.csv" in job["errorMessage"], job
        assert str(tmp_path) not in job["errorMessage"]  # the path as the client gave it
        client.post(JOBS, json=training("outside", "outside.csv", "--model-name", "c"))
        job = wait_state(client, "outside", {"SUCCEEDED", "FAILED"})
        assert job["state"] == "FAILED"
        assert "24 photos are local paths a job may not read (lines 1, 2" in job["errorMessage"]
        assert "/etc" not in job["errorMessage"]
        assert len(trainer.specs) == 1  # neither of the last two reached the Trainer


def _stored(root: Path, job_id: str, args: list[str], state: JobState, attempt: int, **kw) -> Job:
    job = Job(
        job_id=job_id,
        state=state,
        training_input=TrainingInput(args=args),
        training_output=TrainingOutput(attempt=attempt),
        **kw,
    )
    store = JobStore(root / "jobs.sqlite3")
    store.insert("demo", job)
    store.update(job)
    store.close()
    return job


def test_after_a_restart_training_jobs_run_again_or_fail(tmp_path, trainer):
    csv = import_file(tmp_path)
    earlier = rfc3339(datetime.now(UTC) - timedelta(minutes=5))
    _stored(tmp_path, "again", [csv, "--model-name", "colours"], JobState.RUNNING, 1)
    _stored(
        tmp_path, "written", [csv, "--model-name", "done", "--backbone", "tiny"],
        JobState.RUNNING, 1, start_time=earlier,
    )  # fmt: skip
    _stored(tmp_path, "worn", [csv, "--model-name", "x"], JobState.PREPARING, 3)
    _stored(tmp_path, "stopping", [csv, "--model-name", "y"], JobState.CANCELLING, 1)
    # "written" put its version in place, then the gateway died before the job ended.
    extra = tmp_path / "models" / "done" / "1" / "assets.extra"
    extra.mkdir(parents=True)
    (extra / "training.json").write_text(
        '{"import_file": "%s", "seed": 0, "backbone": "EfficientNet-tiny (ImageNet, frozen)",'
        ' "splits": {"training": 5}, "bad_lines": [], "bad_images": [], "duplicates": 0}'
        % (tmp_path / csv)
    )
    trainer.gate.set()
    with TestClient(create_app(settings(tmp_path), FakeBackend())) as client:
        worn = client.get(f"{JOBS}/worn").json()
        assert worn["state"] == "FAILED"
        assert worn["errorMessage"] == (
            "interrupted by a gateway restart 3 times; create it again (under a new job id)"
            " to retry"
        )
        assert client.get(f"{JOBS}/stopping").json()["state"] == "CANCELLED"
        again = wait_state(client, "again", {"SUCCEEDED", "FAILED"})
        assert again["state"] == "SUCCEEDED" and again["trainingOutput"]["attempt"] == 2
        written = wait_state(client, "written", {"SUCCEEDED", "FAILED"})
        assert written["state"] == "SUCCEEDED", written
        out = written["trainingOutput"]
        assert out["builtInAlgorithmOutput"]["modelPath"] == "done/1"
        assert out["splits"] == {"training": 5}
        assert [s.model_name for s in trainer.specs] == ["colours"]  # "written" did not train


def test_a_graceful_shutdown_requeues_a_running_job(tmp_path, trainer):
    csv = import_file(tmp_path)
    with TestClient(create_app(settings(tmp_path), FakeBackend())) as client:
        client.post(JOBS, json=training("t1", csv, "--model-name", "colours"))
        wait_state(client, "t1", {"RUNNING"})
    store = JobStore(tmp_path / "jobs.sqlite3")
    job = store.get("demo", "t1")
    store.close()
    assert job is not None and job.state == JobState.QUEUED
    assert job.training_output is not None and job.training_output.attempt == 0


def test_the_options_are_glimpse_trains():
    """Every option of `glimpse train` is taken or refused by name, none forgotten."""
    import typer

    from model_export.training.cli import register

    app = typer.Typer()
    register(app)
    command = typer.main.get_command(app)
    cli = {
        opt
        for p in command.params
        for opt in (*p.opts, *p.secondary_opts)
        if opt.startswith("--") and "completion" not in opt
    }
    assert cli == set(train_job.OPTIONS) | set(train_job.REFUSED)
