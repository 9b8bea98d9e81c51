"""One output shard: outcomes appended to local spool files, then staged (output.py).

The plain runner keeps one writer per worker open for the whole job; the Beam pipeline opens
one per grouped shard. Both go through this writer, so a shard holds the same bytes whichever
runner wrote it: one prediction object, or one error record, per line, in the order given.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from service.batch.lines import Failure, Outcome
from service.batch.output import StagedShard, stage_shard
from service.batch.storage import Storage


class ShardWriter:
    """Spool files for one shard under `folder`, and what has been written to them."""

    def __init__(self, folder: Path, index: int) -> None:
        self.results_path = folder / f"results-{index}.jsonl"
        self.errors_path = folder / f"errors-{index}.jsonl"
        self._results = self.results_path.open("w", encoding="utf-8")
        self._errors = self.errors_path.open("w", encoding="utf-8")
        self.lines = 0
        self.errors_by_kind: Counter[str] = Counter()

    def write(self, outcomes: Iterable[Outcome]) -> tuple[int, int]:
        """Append outcomes in order; returns (predictions, errors) among them, for progress."""
        predictions = errors = 0
        for outcome in outcomes:
            if isinstance(outcome, Failure):
                self._errors.write(outcome.to_json() + "\n")
                self.errors_by_kind[outcome.kind] += 1
                errors += 1
            else:
                self._results.write(outcome.json + "\n")
                predictions += 1
        self.lines += predictions + errors
        return predictions, errors

    def close(self) -> None:
        self._results.close()
        self._errors.close()

    def stage(self, storage: Storage, staging: str, index: int) -> StagedShard:
        """Upload the spool files as staged shard `index` (its place in the committed set)."""
        self.close()
        return stage_shard(storage, staging, index, self.results_path, self.errors_path)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
