"""A cancelled batch job stops at once, even while the model refuses its batches: a
shutting-down gateway refuses work, and a retry loop that waited out its deadline would
outlast the shutdown grace and count the job as crashed."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import pytest

from service.batch.finish import JobCancelled
from service.batch.lines import LineRef
from service.batch.predict import predict_lines
from service.batch.runner import run_job
from service.batch.spec import JobSpec, JobState
from service.errors import NotReady
from service.instances import DecodeLimits
from service.schemas import PredictParameters
from service.settings import GatewaySettings
from tests.batch_inputs import good_line

pytestmark = pytest.mark.fast


# Far below the 120-s retry deadline the tests run with: a test that reaches it has waited
# the deadline out instead of stopping at the cancel.
HANG = 30.0


class Refusing:
    """A BatchModel whose every batch is refused, as a shutting-down data plane refuses; with
    `cancel`, the job is cancelled at the `cancel_at`-th refusal (no clock involved)."""

    def __init__(self, cancel: asyncio.Event | None = None, cancel_at: int = 2) -> None:
        self.tries, self._cancel, self._cancel_at = 0, cancel, cancel_at

    @asynccontextmanager
    async def held(self):
        self.tries += 1
        if self._cancel is not None and self.tries == self._cancel_at:
            self._cancel.set()
        raise NotReady("the service is shutting down")
        yield  # pragma: no cover


def test_a_cancel_ends_the_retries_of_a_refused_batch():
    async def go() -> int:
        cancel = asyncio.Event()
        model = Refusing(cancel)
        with pytest.raises(JobCancelled):
            await asyncio.wait_for(
                predict_lines(
                    model, [(LineRef("in.jsonl", 1), good_line(0).encode())],
                    PredictParameters(), DecodeLimits(),
                    retry_deadline_s=120.0, max_in_flight=8, cancel=cancel,
                ),
                HANG,
            )  # fmt: skip
        return model.tries

    assert asyncio.run(go()) == 2  # it retried once, and not again after the cancel


def test_a_job_cancelled_while_its_batches_are_refused_is_cancelled_not_failed(tmp_path):
    (tmp_path / "in.jsonl").write_text("\n".join(good_line(i) for i in range(20)) + "\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("the previous output")
    spec = JobSpec(
        input_paths=[str(tmp_path / "in.jsonl")], output_path=str(tmp_path / "out"),
        batch_size=2, max_worker_count=1,
    )  # fmt: skip

    async def go():
        cancel = asyncio.Event()
        model = Refusing(cancel)
        job = run_job(spec, model, GatewaySettings(predict_retry_deadline_s=120.0), cancel=cancel)
        return await asyncio.wait_for(job, HANG), model.tries

    report, tries = asyncio.run(go())
    assert report.state == JobState.CANCELLED, report.error_message
    assert tries == 2  # no batch was tried after the cancel
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]


def test_a_job_whose_model_stays_away_fails_with_the_reason_and_does_not_hang(tmp_path):
    """A failed worker cancels the reader while the queues are full: the reader must not
    wait to hand its end-of-input mark to workers that are gone."""
    (tmp_path / "in.jsonl").write_text("\n".join(good_line(i) for i in range(40)) + "\n")
    spec = JobSpec(
        input_paths=[str(tmp_path / "in.jsonl")], output_path=str(tmp_path / "out"),
        batch_size=1, max_worker_count=2,
    )  # fmt: skip
    settings = GatewaySettings(predict_retry_deadline_s=0.3)
    report = asyncio.run(asyncio.wait_for(run_job(spec, Refusing(), settings), HANG))
    assert report.state == JobState.FAILED
    assert "model unavailable for 0.3 s" in report.error_message
