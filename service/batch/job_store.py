"""Job resources in a small SQLite database, so jobs outlive the gateway process.

One row per job holding its JSON resource; every state change is one committed UPDATE, so a
crash loses at most the last progress tick, never a job.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from service.batch.job_resource import Job


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
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS jobs ("
                " job_id TEXT PRIMARY KEY, created TEXT NOT NULL, body TEXT NOT NULL)"
            )

    def insert(self, job: Job) -> bool:
        """False if the id is taken (the caller answers 409)."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO jobs (job_id, created, body) VALUES (?, ?, ?)",
                    (job.job_id, job.create_time, job.model_dump_json(by_alias=True)),
                )
            except sqlite3.IntegrityError:
                return False
        return True

    def update(self, job: Job) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET body = ? WHERE job_id = ?",
                (job.model_dump_json(by_alias=True), job.job_id),
            )

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return Job.model_validate_json(row[0]) if row else None

    def page(self, after: tuple[str, str] | None, limit: int) -> list[Job]:
        """Newest first, starting after the (create time, job id) of the last job a client
        saw: a job created between two pages shifts nothing (no offsets)."""
        where, args = "", ()
        if after is not None:
            where = "WHERE created < ? OR (created = ? AND job_id > ?)"
            args = (after[0], after[0], after[1])
        with self._lock:
            rows = self._db.execute(
                f"SELECT body FROM jobs {where} ORDER BY created DESC, job_id LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [Job.model_validate_json(r[0]) for r in rows]

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
                    f"DELETE FROM jobs WHERE job_id IN (SELECT job_id FROM jobs WHERE {finished}"
                    " ORDER BY created LIMIT ?)",
                    (total - keep,),
                ).rowcount
        return gone

    def queued(self) -> list[Job]:
        """QUEUED jobs, oldest first: what the scheduler polls, without parsing every job."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM jobs WHERE json_extract(body, '$.state') = 'QUEUED'"
                " ORDER BY created"
            ).fetchall()
        return [Job.model_validate_json(r[0]) for r in rows]

    def all(self) -> list[Job]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM jobs ORDER BY created").fetchall()
        return [Job.model_validate_json(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
