"""Batch prediction end to end: JSON lines in (local or the storage emulator), shards out."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from service.batch.output import SUMMARY
from service.batch.runner import run_job
from service.batch.spec import JobSpec, JobState
from tests.batch_inputs import good_line, mixed_file
from tests.predictions import assert_same_predictions


def run_local(spec: JobSpec, settings, on_progress=None, storage=None):
    from service.batch.model_source import StandaloneModel

    async def go():
        model = StandaloneModel(settings)
        runner = await model.start()
        try:
            return await run_job(spec, runner, settings, storage, on_progress)
        finally:
            await model.close()

    return asyncio.run(go())


def gcs_outputs(bucket, prefix: str) -> dict[str, bytes]:
    return {
        b.name[len(prefix) :]: b.download_as_bytes()
        for b in bucket.client.list_blobs(bucket.name, prefix=prefix)
    }


def records(outputs: dict[str, bytes], kind: str) -> list[dict]:
    return [
        json.loads(line)
        for name, data in sorted(outputs.items())
        if name.startswith(kind)
        for line in data.decode().splitlines()
    ]


def test_local_job_accounts_for_every_line(tmp_path, gateway_settings):
    (tmp_path / "in").mkdir()
    text_a, good_a, bad_a = mixed_file(0, 5)
    text_b, good_b, bad_b = mixed_file(100, 8)
    (tmp_path / "in" / "a.jsonl").write_text(text_a)
    (tmp_path / "in" / "b.jsonl").write_text(text_b.rstrip("\n"))  # no final newline
    (tmp_path / "in" / "skip.txt").write_text("not matched by the pattern\n")
    out = tmp_path / "out"
    spec = JobSpec(
        input_paths=[f"file://{tmp_path}/in/*.jsonl"], output_path=str(out),
        batch_size=4, max_worker_count=3,
    )  # fmt: skip
    report = run_local(spec, gateway_settings())

    assert report.state == JobState.SUCCEEDED, report.error_message
    assert report.lines == good_a + bad_a + good_b + bad_b
    assert (report.predictions, report.errors) == (good_a + good_b, bad_a + bad_b)
    assert report.errors_by_kind == {
        "empty_line": 2, "invalid_image": 6, "invalid_instance": 2, "not_json": 2,
    }  # fmt: skip
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        *(f"prediction.errors_stats-0000{i}-of-00003" for i in range(3)),
        *(f"prediction.results-0000{i}-of-00003" for i in range(3)),
        SUMMARY,
    ]
    outputs = {p.name: p.read_bytes() for p in out.iterdir()}
    results = records(outputs, "prediction.results")
    errors = records(outputs, "prediction.errors_stats")
    assert len(results) + len(errors) == report.lines
    assert sorted(r["key"] for r in results) == sorted(
        [f"k{i}" for i in range(5)] + [f"k{100 + i}" for i in range(8)]
    )
    assert all(len(r["glimpses"]) == 6 and r["annotated_image_bytes"]["b64"] for r in results)
    # Every failed line says where it is, which key it had and why.
    lines_a = text_a.split("\n")
    for e in errors:
        assert e["input_path"].endswith(".jsonl")
        assert e["line"] >= 1 and e["error"]
        source = lines_a if e["input_path"].endswith("a.jsonl") else text_b.split("\n")
        assert source[e["line"] - 1] == "" or (
            e["key"] is None or e["key"] in source[e["line"] - 1]
        )
    by_key = {e["key"]: e for e in errors if e["key"]}
    assert "invalid base64" in by_key["bad-b64"]["error"]
    assert "not a decodable image" in by_key["not-image"]["error"]
    assert "truncated" in by_key["truncated"]["error"]
    assert by_key["wrong-type"]["kind"] == "invalid_instance"
    summary = json.loads(outputs[SUMMARY])
    assert summary["state"] == "SUCCEEDED" and summary["lines"] == report.lines
    assert not (out / "_temporary").exists()


def test_over_long_lines_are_errors_not_memory(tmp_path, gateway_settings):
    from service.batch.storage import iter_lines

    good = good_line(1).encode()
    limit = len(good) + 10
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"x" * 3 * limit + b"\n" + good + b"\r\n" + b"y" * (limit + 1))
    with path.open("rb") as f:  # chunks smaller than a line: lines span chunk boundaries
        got = list(iter_lines(f, max_bytes=limit, chunk=700))
    assert got == [3 * limit, good + b"\r", limit + 1]

    spec = JobSpec(input_paths=[str(path)], output_path=str(tmp_path / "out"))
    report = run_local(spec, gateway_settings(batch_max_line_bytes=limit))
    assert (report.lines, report.predictions) == (3, 1)
    assert report.errors_by_kind == {"line_too_long": 2}


def test_gcs_wildcards_shards_and_rerun(bucket, gateway_settings):
    texts = [mixed_file(10 * i, 3 + i) for i in range(3)]
    for i, (text, _, _) in enumerate(texts):
        bucket.blob(f"in/part-{i}.jsonl").upload_from_string(text)
    bucket.blob("in/sub/ignored.jsonl").upload_from_string(good_line(0) + "\n")
    total = sum(g + b for _, g, b in texts)
    out = f"gs://{bucket.name}/out"
    settings = gateway_settings()
    spec = JobSpec(
        input_paths=[f"gs://{bucket.name}/in/part-0*", f"gs://{bucket.name}/in/part-[12].jsonl"],
        output_path=out, batch_size=5, max_worker_count=4,
    )  # fmt: skip
    first = run_local(spec, settings)
    assert first.state == JobState.SUCCEEDED, first.error_message
    assert first.lines == total and first.balanced and len(first.input_files) == 3
    outputs = gcs_outputs(bucket, "out/")
    assert sorted(outputs) == sorted(
        [f"prediction.results-0000{i}-of-00004" for i in range(4)]
        + [f"prediction.errors_stats-0000{i}-of-00004" for i in range(4)]
        + [SUMMARY]
    )
    assert len(records(outputs, "prediction.results")) == first.predictions
    assert len(records(outputs, "prediction.errors_stats")) == first.errors

    # Rerun into the same path with fewer shards: the old set is replaced, nothing is left
    # over, and the predictions are the same.
    again = run_local(spec.model_copy(update={"max_worker_count": 2}), settings)
    assert again.state == JobState.SUCCEEDED
    rerun = gcs_outputs(bucket, "out/")
    assert sorted(n for n in rerun if n != SUMMARY) == sorted(
        [f"prediction.results-0000{i}-of-00002" for i in range(2)]
        + [f"prediction.errors_stats-0000{i}-of-00002" for i in range(2)]
    )
    # Other shards mean other batch compositions: scores agree to a tolerance, not bit for bit.
    assert_same_predictions(
        records(rerun, "prediction.results"), records(outputs, "prediction.results")
    )

    # A job that fails (an input pattern matching nothing) leaves that set untouched.
    failed = run_local(
        spec.model_copy(update={"input_paths": [f"gs://{bucket.name}/nothing-*"]}), settings
    )
    assert failed.state == JobState.FAILED and "no input files match" in failed.error_message
    assert gcs_outputs(bucket, "out/") == rerun


def test_storage_restart_mid_job_loses_no_line(gcs, bucket, gateway_settings):
    from service.batch.storage import Storage

    lines = [good_line(i) for i in range(60)]
    bucket.blob("in/big.jsonl").upload_from_string("\n".join(lines) + "\n")
    down = threading.Event()

    def on_progress(p) -> None:
        # Mid-job, once: the emulator is killed and comes back 3 s later, so reading the rest
        # of the input and staging the output both meet the outage.
        if p.lines >= 12 and not down.is_set():
            down.set()
            threading.Thread(target=gcs.restart, args=(3.0,)).start()

    spec = JobSpec(
        input_paths=[f"gs://{bucket.name}/in/big.jsonl"],
        output_path=f"gs://{bucket.name}/out", batch_size=4, max_worker_count=2,
    )  # fmt: skip
    storage = Storage(retry_deadline_s=60, read_chunk_bytes=16 * 1024)  # many reads
    report = run_local(spec, gateway_settings(), on_progress, storage)
    assert down.is_set()
    assert report.state == JobState.SUCCEEDED, report.error_message
    assert report.seconds > 3.0  # it waited for storage instead of failing
    assert report.lines == report.predictions == 60
    outputs = gcs_outputs(bucket, "out/")
    assert sorted(r["key"] for r in records(outputs, "prediction.results")) == sorted(
        f"k{i}" for i in range(60)
    )


def test_storage_gone_for_good_fails_the_job_with_a_reason(gcs, bucket, gateway_settings):
    bucket.blob("in/a.jsonl").upload_from_string(good_line(1) + "\n")
    spec = JobSpec(
        input_paths=[f"gs://{bucket.name}/in/a.jsonl"], output_path=f"gs://{bucket.name}/out"
    )
    gcs.kill()
    try:
        report = run_local(spec, gateway_settings(storage_retry_deadline_s=2))
    finally:
        gcs.start()
    assert report.state == JobState.FAILED
    assert "Connection refused" in report.error_message or "Timeout" in report.error_message
    assert gcs_outputs(bucket, "out/") == {}


@pytest.mark.slow
def test_beam_pipeline_matches_the_plain_runner(bucket, gateway_settings):
    from service.batch.pipeline import run_beam

    for i in range(2):
        text, _, _ = mixed_file(20 * i, 4)
        bucket.blob(f"in/{i}.jsonl").upload_from_string(text)
    settings = gateway_settings()
    spec = JobSpec(
        input_paths=[f"gs://{bucket.name}/in/*.jsonl"], output_path=f"gs://{bucket.name}/beam",
        batch_size=3, max_worker_count=2,
    )  # fmt: skip
    beam = run_beam(spec, settings, beam_args=["--runner=DirectRunner"])
    assert beam.state == JobState.SUCCEEDED, beam.error_message
    plain = run_local(
        spec.model_copy(update={"output_path": f"gs://{bucket.name}/plain"}), settings
    )
    assert (beam.lines, beam.predictions, beam.errors) == (
        plain.lines,
        plain.predictions,
        plain.errors,
    )
    assert beam.errors_by_kind == plain.errors_by_kind
    b, p = gcs_outputs(bucket, "beam/"), gcs_outputs(bucket, "plain/")
    assert_same_predictions(records(b, "prediction.results"), records(p, "prediction.results"))
    assert sorted(map(json.dumps, records(b, "prediction.errors_stats"))) == sorted(
        map(json.dumps, records(p, "prediction.errors_stats"))
    )
