"""`glimpse predict` and `glimpse bench` as users run them: in a subprocess, against a live
gateway (tiny model) on 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import encode
from tests.servers import live_server


def glimpse(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "400", **(env or {})},
    )  # fmt: skip


@pytest.fixture
def photos(tmp_path, photo_bytes):
    (tmp_path / "cat.png").write_bytes(photo_bytes)
    rng = np.random.default_rng(0)
    (tmp_path / "noise.jpg").write_bytes(
        encode(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), "JPEG")
    )
    (tmp_path / "notes.jpg").write_bytes(b"just some text, not an image")
    return tmp_path


def test_predict_prints_a_table_and_writes_annotated_images(gateway, photos):
    out = photos / "annotated"
    done = glimpse(
        "predict", str(photos / "cat.png"), str(photos / "noise.jpg"), "--url", gateway.url,
        "--out", str(out), "--num-glimpses", "3", "--top-k", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for header in ("file", "class", "score", "coverage", "glimpses", "annotated"):
        assert header in done.stdout
    assert "cat.png" in done.stdout and "noise.jpg" in done.stdout
    assert done.stdout.count(" 3: ") == 2 and " 4: " not in done.stdout  # 3 glimpses each
    written = sorted(p.name for p in out.iterdir())
    assert written == ["cat.glimpses.png", "noise.glimpses.png"]
    image = Image.open(io.BytesIO((out / "cat.glimpses.png").read_bytes()))
    assert image.format == "PNG" and image.size == (224, 224)


def test_predict_json_lines(gateway, photos):
    done = glimpse("predict", str(photos / "cat.png"), "--url", gateway.url, "--json")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.strip().splitlines()
    prediction = json.loads(line)
    assert prediction["key"] == "cat.png" and len(prediction["glimpses"]) == 6
    assert "annotated_image" not in prediction


def test_failures_are_named_and_exit_1(gateway, photos):
    out = photos / "annotated"
    done = glimpse(
        "predict", str(photos / "notes.jpg"), str(photos / "missing.png"),
        str(photos / "cat.png"), "--url", gateway.url, "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 1
    stderr = " ".join(done.stderr.split())  # rich may wrap long lines
    assert "notes.jpg: 400: instances[0]" in stderr
    assert "missing.png: No such file or directory" in stderr
    assert "2 of 3 failed" in stderr
    assert "cat.png" in done.stdout  # the good photo still got its answer and its image
    assert [p.name for p in out.iterdir()] == ["cat.glimpses.png"]


def test_usage_errors_exit_2_and_unreachable_service_exits_1(photos):
    assert glimpse("predict").returncode == 2
    bad = glimpse("predict", str(photos / "cat.png"), "--num-glimpses", "17")
    assert bad.returncode == 2 and "num-glimpses" in bad.stderr
    assert glimpse("predict", str(photos / "cat.png"), "--flavour", "grpc").returncode == 2

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = glimpse(
        "predict", str(photos / "cat.png"), str(photos / "noise.jpg"),
        "--url", f"http://127.0.0.1:{port}", "--retries", "0",
    )  # fmt: skip
    assert down.returncode == 1
    stderr = " ".join(down.stderr.split())
    assert "cannot reach" in stderr and "noise.jpg: not sent" in stderr


def test_token_from_option_or_environment(gateway_settings, photos):
    with live_server(gateway_settings(auth_token="s3cret")) as gw:
        image = str(photos / "cat.png")
        denied = glimpse("predict", image, "--url", gw.url)
        assert denied.returncode == 1 and "401" in denied.stderr
        assert glimpse("predict", image, "--url", gw.url, "--token", "s3cret").returncode == 0
        by_env = glimpse(
            "predict", image, env={"GLIMPSE_URL": gw.url, "GLIMPSE_AUTH_TOKEN": "s3cret"}
        )
        assert by_env.returncode == 0 and "cat.png" in by_env.stdout


@pytest.mark.parametrize(
    "command",
    ["predict", "bench", "serve", "export", "classify", "batch submit", "batch status",
     "batch list", "batch cancel"],
)  # fmt: skip
def test_every_command_has_examples_in_its_help(command):
    done = glimpse(*command.split(), "--help")
    assert done.returncode == 0 and "Example" in done.stdout
    assert f"glimpse {command} " in done.stdout


def test_bench_runs_the_module_with_the_makefile_arguments(tiny_model_dir, tmp_path):
    assert glimpse("bench", "nope").returncode == 2
    missing = glimpse("bench", "cost", "--model-dir", str(tmp_path))
    assert missing.returncode == 1 and "glimpse export" in missing.stderr
    # Options after `--` reach the module: its own argparse help, exit 0.
    passed = glimpse("bench", "cost", "--model-dir", str(tiny_model_dir), "--", "--help")
    assert passed.returncode == 0, passed.stderr
    assert "--repeats" in passed.stdout and "--batches" in passed.stdout
    assert f"-m bench.cost --model-dir {tiny_model_dir}" in passed.stderr
    # An option the module does not know: argparse's usage error comes back as the status.
    wrong = glimpse("bench", "cost", "--model-dir", str(tiny_model_dir), "--", "--nope")
    assert wrong.returncode == 2 and "unrecognized arguments: --nope" in wrong.stderr
