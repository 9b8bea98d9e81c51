"""`glimpse batch`: the console script as users run it, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.batch_inputs import good_line, mixed_file
from tests.servers import live_server


def glimpse(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "batch", *args],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )  # fmt: skip


def test_submit_runs_locally_and_reports(tmp_path, tiny_model_dir):
    text, goods, bads = mixed_file(0, 4)
    (tmp_path / "a.jsonl").write_text(text)
    done = glimpse(
        "submit", "--input-paths", str(tmp_path / "a.jsonl"), "--output-path",
        str(tmp_path / "out"), "--model-dir", str(tiny_model_dir), "--quiet",
        "--no-annotated-image",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert (report["predictions"], report["errors"]) == (goods, bads)
    assert "SUCCEEDED" in done.stderr and "predictions" in done.stderr  # the summary table
    results = (tmp_path / "out" / "prediction.results-00000-of-00001").read_text().splitlines()
    assert "annotated_image_bytes" not in json.loads(results[0])

    missing = glimpse(
        "submit", "--input-paths", str(tmp_path / "nope-*.jsonl"), "--output-path",
        str(tmp_path / "out2"), "--model-dir", str(tiny_model_dir), "--quiet",
    )  # fmt: skip
    assert missing.returncode == 1
    assert "no input files match" in missing.stderr
    usage = glimpse("submit", "--input-paths", "x", "--output-path", "y", "--data-format", "tf")
    assert usage.returncode == 2 and "text" in usage.stderr


def test_submit_status_list_cancel_against_a_gateway(tmp_path, gateway_settings):
    (tmp_path / "in.jsonl").write_text("\n".join(good_line(i) for i in range(3)) + "\n")
    settings = gateway_settings(jobs_local_root=tmp_path)
    with live_server(settings) as gw:
        url = ["--url", gw.url]
        done = glimpse(
            "submit", *url, "--wait", "--job-id", "cli_job",
            "--input-paths", "in.jsonl", "--output-path", "out",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["predictionOutput"]["predictionCount"] == "3"
        status = glimpse("status", "cli_job", *url)
        assert status.returncode == 0 and json.loads(status.stdout)["state"] == "SUCCEEDED"
        listed = glimpse("list", *url)
        assert listed.stdout.startswith("cli_job\tSUCCEEDED\t3 predictions")
        refused = glimpse("cancel", "cli_job", *url)
        assert refused.returncode == 1 and "already SUCCEEDED" in refused.stderr
        unknown = glimpse("status", "nope", *url)
        assert unknown.returncode == 1 and "404" in unknown.stderr
    unreachable = glimpse("status", "cli_job", "--url", gw.url)  # the gateway has stopped
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
