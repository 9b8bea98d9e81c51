"""Shards are staged elsewhere, then copied into place only when the whole job succeeded.

Layout of an output path after a job:
    prediction.results-00000-of-00002        one prediction object per line (JSON)
    prediction.errors_stats-00000-of-00002   one error record per failed line (only if any)
    prediction.summary.json                  the job report; written last, removed first

A reader that finds `prediction.summary.json` sees a complete, consistent set. A rerun into
the same path replaces the set (stale shards from a run with more shards are removed), and a
failed or cancelled job leaves the previous set untouched.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from service.batch.storage import Storage, join

RESULTS = "prediction.results"
ERRORS = "prediction.errors_stats"
SUMMARY = "prediction.summary.json"
_OUTPUT_NAME = re.compile(rf"^({re.escape(RESULTS)}|{re.escape(ERRORS)})-\d{{5}}-of-\d{{5}}$")


def staging_prefix(output_path: str, job_id: str) -> str:
    return join(output_path, f"_temporary/{job_id}-{uuid.uuid4().hex[:8]}")


def shard_name(kind: str, index: int, count: int) -> str:
    return f"{kind}-{index:05d}-of-{count:05d}"


@dataclass
class StagedShard:
    """One shard's staged results and errors (either may be empty)."""

    results: str
    errors: str
    has_errors: bool


def _staged_names(index: int) -> tuple[str, str]:
    return f"results-{index}", f"errors-{index}"


def stage_shard(
    storage: Storage, staging: str, index: int, results: Path, errors: Path
) -> StagedShard:
    """Upload one shard's local files under `staging`; an empty errors file is not uploaded."""
    results_name, errors_name = _staged_names(index)
    staged = StagedShard(
        join(staging, results_name), join(staging, errors_name), errors.stat().st_size > 0
    )
    storage.upload(results, staged.results)
    if staged.has_errors:
        storage.upload(errors, staged.errors)
    return staged


def find_staged(storage: Storage, staging: str, count: int) -> list[StagedShard]:
    """The shards staged under `staging` with indexes below `count`, in index order.

    For a driver whose workers staged the shards and could not hand them back (Beam): a shard
    that got no lines was never staged and is left out, as the plain runner leaves it out."""
    names = set(storage.list_names(staging))
    found = []
    for k in range(count):
        results_name, errors_name = _staged_names(k)
        if results_name in names:
            found.append(
                StagedShard(
                    join(staging, results_name), join(staging, errors_name), errors_name in names
                )
            )
    return found


def commit(storage: Storage, output_path: str, shards: list[StagedShard], summary: bytes) -> int:
    """Copy staged shards into place; returns how many shards each set has."""
    count = max(1, len(shards))
    existing = set(storage.list_names(output_path))
    storage.delete(join(output_path, SUMMARY))
    written = set()
    any_errors = any(s.has_errors for s in shards)
    for i, shard in enumerate(shards):
        name = shard_name(RESULTS, i, count)
        storage.copy(shard.results, join(output_path, name))
        written.add(name)
        if any_errors:
            name = shard_name(ERRORS, i, count)
            if shard.has_errors:
                storage.copy(shard.errors, join(output_path, name))
            else:
                storage.write_bytes(join(output_path, name), b"", "text/plain")
            written.add(name)
    if not shards:  # no input lines: still one (empty) results shard, as Beam writes
        name = shard_name(RESULTS, 0, 1)
        storage.write_bytes(join(output_path, name), b"", "text/plain")
        written.add(name)
    for stale in sorted(n for n in existing if _OUTPUT_NAME.match(n) and n not in written):
        storage.delete(join(output_path, stale))
    storage.write_bytes(join(output_path, SUMMARY), summary)
    return count
