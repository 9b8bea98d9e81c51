"""Job resources in a small SQLite database, so jobs outlive the gateway process.

One row per job holding its JSON resource; every state change is one committed UPDATE, so a
crash loses at most the last progress tick, never a job.

Jobs belong to the project in the URL they were created under (`projects/X/jobs`), and every
read is scoped to one project: another project's job is as unknown as a job that never was.
Job ids are unique per project, as on ml.googleapis.com, so two projects may each have a job
`daily`; a 409 for an id another project holds would tell one project about the other's jobs.

Databases written before projects were recorded are migrated in place; their jobs get no
project (NULL). Those jobs date from when one deployment served one project, so they stay
visible, as they were, under every project until retention forgets them, and no project can
create a second job with one of their ids.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from service.batch.job_resource import Job

# The rows a project sees: its own, and the migrated ones that have no project.
_SEEN_BY = "(project = ? OR project IS NULL)"


class JobStore:
    def __init__(self, path: Path | None):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(path) if path else ":memory:", check_same_thread=False, isolation_level=None
        )
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("BEGIN IMMEDIATE")  # one migration, whoever else opens the file
            try:
                self._create_or_migrate()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _create_or_migrate(self) -> None:
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(jobs)")]
        if columns and "project" not in columns:  # the schema before projects: rebuild
            self._db.execute("ALTER TABLE jobs RENAME TO jobs_before_projects")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (project TEXT, job_id TEXT NOT NULL,"
            " created TEXT NOT NULL, body TEXT NOT NULL, UNIQUE (project, job_id))"
        )
        if columns and "project" not in columns:
            self._db.execute(
                "INSERT INTO jobs (project, job_id, created, body)"
                " SELECT NULL, job_id, created, body FROM jobs_before_projects"
            )
            self._db.execute("DROP TABLE jobs_before_projects")
        self._db.execute("CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (project, created)")

    def insert(self, project: str, job: Job) -> bool:
        """False if the project has a job with this id (the caller answers 409)."""
        job.project = project
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # the check and the insert are one step
            try:
                if self._db.execute(
                    f"SELECT 1 FROM jobs WHERE job_id = ? AND {_SEEN_BY}", (job.job_id, project)
                ).fetchone():
                    return False
                self._db.execute(
                    "INSERT INTO jobs (project, job_id, created, body) VALUES (?, ?, ?, ?)",
                    (project, job.job_id, job.create_time, job.model_dump_json(by_alias=True)),
                )
            except sqlite3.IntegrityError:
                return False
            finally:
                self._db.execute("COMMIT")
        return True

    def update(self, job: Job) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET body = ? WHERE project IS ? AND job_id = ?",
                (job.model_dump_json(by_alias=True), job.project, job.job_id),
            )

    def get(self, project: str | None, job_id: str) -> Job | None:
        """The job `job_id` as `project` sees it (None: the job's own project is unknown,
        which only the migrated jobs have)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT project, body FROM jobs WHERE job_id = ? AND {_SEEN_BY}",
                (job_id, project),
            ).fetchone()
        return _job(row) if row else None

    def page(
        self,
        project: str,
        after: tuple[str, str] | None,
        limit: int,
        keep: Callable[[Job], bool] = lambda job: True,
    ) -> list[Job]:
        """Up to `limit` of the project's jobs that `keep` accepts, newest first, starting
        after the (create time, job id) of the last job a client saw: a job created between
        two pages shifts nothing (no offsets). Jobs are read in order until the page is full,
        so a filter costs at most one pass over the (bounded, see prune) store."""
        where, args = _SEEN_BY, [project]
        if after is not None:
            where += " AND (created < ? OR (created = ? AND job_id > ?))"
            args += [after[0], after[0], after[1]]
        jobs: list[Job] = []
        with (
            self._lock,
            contextlib.closing(
                self._db.execute(
                    f"SELECT project, body FROM jobs WHERE {where} ORDER BY created DESC, job_id",
                    args,
                )
            ) as rows,
        ):
            for row in rows:
                job = _job(row)
                if keep(job):
                    jobs.append(job)
                    if len(jobs) == limit:
                        break
        return jobs

    def prune(self, keep: int, finished_before: str) -> int:
        """Forget finished jobs that ended before `finished_before`, and the oldest finished
        ones beyond `keep` jobs in all: the store is bounded whatever clients create."""
        finished = "json_extract(body, '$.state') IN ('SUCCEEDED', 'FAILED', 'CANCELLED')"
        with self._lock:
            gone = self._db.execute(
                f"DELETE FROM jobs WHERE {finished} AND json_extract(body, '$.endTime') < ?",
                (finished_before,),
            ).rowcount
            total = self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
            if total > keep:
                gone += self._db.execute(
                    f"DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs WHERE {finished}"
                    " ORDER BY created LIMIT ?)",
                    (total - keep,),
                ).rowcount
        return gone

    def queued(self) -> list[Job]:
        """QUEUED jobs, oldest first: what the scheduler polls, without parsing every job."""
        with self._lock:
            rows = self._db.execute(
                "SELECT project, body FROM jobs WHERE json_extract(body, '$.state') = 'QUEUED'"
                " ORDER BY created"
            ).fetchall()
        return [_job(r) for r in rows]

    def unfinished(self) -> list[Job]:
        """Jobs not yet SUCCEEDED, FAILED or CANCELLED, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT project, body FROM jobs WHERE json_extract(body, '$.state')"
                " NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED') ORDER BY created"
            ).fetchall()
        return [_job(r) for r in rows]

    def all(self) -> list[Job]:
        with self._lock:
            rows = self._db.execute("SELECT project, body FROM jobs ORDER BY created").fetchall()
        return [_job(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _job(row: tuple[str | None, str]) -> Job:
    job = Job.model_validate_json(row[1])
    job.project = row[0]
    return job
