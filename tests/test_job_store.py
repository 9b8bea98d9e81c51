"""The jobs store (service/batch/job_store.py): project scoping, keyset pages, retention, and the
migration of a database written before jobs recorded their project."""

from __future__ import annotations

import sqlite3

import pytest

from service.batch.job_resource import Job, PredictionInput
from service.batch.job_store import JobStore
from service.batch.spec import JobState

pytestmark = pytest.mark.fast

GIVEN = PredictionInput(data_format="JSON", input_paths=["in.jsonl"], output_path="out")


def job(job_id: str, created: str, state: JobState = JobState.QUEUED, **kw) -> Job:
    return Job(job_id=job_id, create_time=created, state=state, prediction_input=GIVEN, **kw)


def test_jobs_are_scoped_by_project(tmp_path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    assert store.insert("alpha", job("daily", "2026-01-01T00:00:00.000Z"))
    assert store.insert("beta", job("daily", "2026-01-02T00:00:00.000Z"))  # ids are per project
    assert not store.insert("alpha", job("daily", "2026-01-03T00:00:00.000Z"))
    assert store.insert("alpha", job("other", "2026-01-04T00:00:00.000Z"))

    alpha = store.get("alpha", "daily")
    assert alpha is not None and alpha.project == "alpha"
    assert alpha.create_time.startswith("2026-01-01")
    assert store.get("gamma", "daily") is None
    assert store.get("beta", "other") is None

    assert [j.job_id for j in store.page("alpha", None, 10)] == ["other", "daily"]
    assert [j.job_id for j in store.page("beta", None, 10)] == ["daily"]
    assert store.page("gamma", None, 10) == []

    alpha.state = JobState.RUNNING
    store.update(alpha)  # updates alpha's row only
    assert store.get("alpha", "daily").state == JobState.RUNNING
    assert store.get("beta", "daily").state == JobState.QUEUED
    assert {(j.project, j.job_id) for j in store.queued()} == {
        ("beta", "daily"),
        ("alpha", "other"),
    }
    store.close()


def test_pages_are_keyset_and_filtered(tmp_path) -> None:
    store = JobStore(None)
    for i in range(6):
        state = JobState.SUCCEEDED if i % 2 else JobState.FAILED
        store.insert("p", job(f"j{i}", f"2026-01-0{i + 1}T00:00:00.000Z", state))
    keep = lambda j: j.state == JobState.SUCCEEDED  # noqa: E731
    first = store.page("p", None, 2, keep)
    assert [j.job_id for j in first] == ["j5", "j3"]
    store.insert("p", job("j_new", "2026-02-01T00:00:00.000Z", JobState.SUCCEEDED))
    rest = store.page("p", (first[-1].create_time, first[-1].job_id), 10, keep)
    assert [j.job_id for j in rest] == ["j1"]  # the new job shifts nothing
    store.close()


def test_retention_counts_every_project(tmp_path) -> None:
    store = JobStore(None)
    for i in range(4):
        ended = f"2026-01-0{i + 1}T00:00:00.000Z"
        done = job(f"j{i}", ended, JobState.SUCCEEDED, end_time=ended)
        store.insert("a" if i % 2 else "b", done)
    store.insert("a", job("queued", "2026-01-09T00:00:00.000Z"))
    assert store.prune(keep=3, finished_before="2026-01-02T00:00:00.000Z") == 2
    assert [(j.project, j.job_id) for j in store.all()] == [
        ("b", "j2"),
        ("a", "j3"),
        ("a", "queued"),
    ]
    store.close()


def test_a_database_from_before_projects_is_migrated(tmp_path) -> None:
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, created TEXT NOT NULL, body TEXT NOT NULL)"
    )
    for j in (job("legacy", "2025-06-01T00:00:00.000Z"), job("done", "2025-06-02T00:00:00.000Z")):
        old.execute(
            "INSERT INTO jobs VALUES (?, ?, ?)",
            (j.job_id, j.create_time, j.model_dump_json(by_alias=True)),
        )
    old.commit()
    old.close()

    store = JobStore(path)
    # Legacy jobs date from one project per deployment: every project still sees them...
    for project in ("alpha", "beta"):
        found = store.get(project, "legacy")
        assert found is not None and found.project is None
        assert [j.job_id for j in store.page(project, None, 10)] == ["done", "legacy"]
    # ...their ids stay taken, and the scheduler still runs them.
    assert not store.insert("alpha", job("legacy", "2026-01-01T00:00:00.000Z"))
    assert {j.job_id for j in store.queued()} == {"legacy", "done"}
    found.state = JobState.RUNNING
    store.update(found)
    assert store.get(None, "legacy").state == JobState.RUNNING
    # New jobs are scoped.
    assert store.insert("alpha", job("fresh", "2026-01-02T00:00:00.000Z"))
    assert store.get("beta", "fresh") is None
    store.close()

    again = JobStore(path)  # opening a migrated database changes nothing
    assert [j.job_id for j in again.page("beta", None, 10)] == ["done", "legacy"]
    assert [j.job_id for j in again.page("alpha", None, 10)] == ["fresh", "done", "legacy"]
    again.close()
