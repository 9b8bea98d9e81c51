"""How every batch job ends, whichever runner ran it (runner.py, pipeline.py).

A job that got through its lines is checked (every line a prediction or an error record), its
shards are staged and committed with the summary written last (output.py), and its report says
SUCCEEDED. A job that stopped is CANCELLED or FAILED with the reason users see, and nothing is
committed. Keeping this in one place is what keeps the two runners' output and reports alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from service.batch.output import StagedShard, commit
from service.batch.spec import JobReport, JobState
from service.batch.storage import Storage
from service.errors import InvalidInput

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a runner once cancellation is seen; the job ends CANCELLED."""


def stamp(report: JobReport, started: float, state: JobState, shards: int = 0) -> JobReport:
    """The report in `state`, with the time since `started` (time.perf_counter) and the rate."""
    seconds = time.perf_counter() - started
    return report.model_copy(
        update={
            "state": state,
            "shards": shards,
            "seconds": round(seconds, 3),
            "instances_per_s": round(report.lines / seconds, 2) if seconds > 0 else 0.0,
        }
    )


def succeed(
    storage: Storage,
    output_path: str,
    report: JobReport,
    started: float,
    stage: Callable[[], list[StagedShard]],
) -> JobReport:
    """Check the line accounting, stage the shards (`stage`, which may raise JobCancelled),
    commit them with the summary, and return the SUCCEEDED report.

    The summary is stamped before the commit that writes it; the report returned is stamped
    after it, so that the job's time (and node hours) counts the commit too."""
    if not report.balanced:  # a bug, never a silent loss
        raise RuntimeError(f"line accounting broke: {report}")
    staged = stage()
    summary = stamp(report, started, JobState.SUCCEEDED, len(staged) or 1)
    shards = commit(storage, output_path, staged, summary.model_dump_json(indent=1).encode())
    return stamp(report, started, JobState.SUCCEEDED, shards)


def stopped(report: JobReport, started: float, error: Exception) -> JobReport:
    """The report of a job that `error` ended before its output was committed."""
    if isinstance(error, JobCancelled):
        state, message = JobState.CANCELLED, "cancelled before the output was committed"
    elif isinstance(error, InvalidInput):  # the user's to fix: the message is enough
        state, message = JobState.FAILED, error.message
    else:
        log.error("%s batch job %s failed", report.runner, report.job_id, exc_info=error)
        state, message = JobState.FAILED, f"{type(error).__name__}: {str(error)[:1000]}"
    return stamp(report, started, state).model_copy(update={"error_message": message})


def remove_staging(storage: Storage, staging: str) -> None:
    """Best effort: leftovers under _temporary/ are harmless, and must not fail a job."""
    try:
        storage.delete_tree(staging)
    except Exception:  # noqa: BLE001
        log.warning("could not remove staging files under %s", staging, exc_info=True)
