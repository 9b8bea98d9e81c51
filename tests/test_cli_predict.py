"""`glimpse predict` and `glimpse bench` as users run them: in a subprocess, against a live
gateway (tiny model) on 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glimpse_client import Prediction
from service.cli_predict import class_text, prediction_row, predictions_table
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
    assert written == ["cat.glimpses.jpg", "noise.glimpses.jpg"]  # the model's JPEG
    image = Image.open(io.BytesIO((out / "cat.glimpses.jpg").read_bytes()))
    assert image.format == "JPEG" and image.size == (224, 224)


def test_table_in_a_narrow_terminal_keeps_class_and_score(gateway, photos):
    """COLUMNS=80, a long path: the file's name may shorten, the answer may not."""
    deep = photos / "a-rather-long-directory-name" / "and-another-one-below-it"
    deep.mkdir(parents=True)
    (deep / "cat.png").write_bytes((photos / "cat.png").read_bytes())
    answer = glimpse("predict", str(deep / "cat.png"), "--url", gateway.url, "--json")
    top = json.loads(answer.stdout)["top_class"]
    done = glimpse("predict", str(deep / "cat.png"), "--url", gateway.url, env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    assert max(len(line) for line in done.stdout.splitlines()) <= 80
    assert top["label"] in done.stdout and f"{top['score']:.3f}" in done.stdout
    assert "a-rather-long-directory-name" not in done.stdout  # the name, not the path


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
    assert [p.name for p in out.iterdir()] == ["cat.glimpses.jpg"]


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


def _prediction(label: str, synset: str, score: float) -> Prediction:
    """A prediction as the gateway answers it: six glimpses of a 2 x 3 focus region."""
    glimpses = [
        {"order": i + 1, "box": {"ymin": y, "xmin": x, "ymax": y + 64, "xmax": x + 64},
         "centre": {"y": y + 32, "x": x + 32}, "new_pixels": 1.0 if i == 0 else 0.55}
        for i, (y, x) in enumerate([(40, 64), (88, 104), (88, 64), (40, 104), (40, 144), (88, 144)])
    ]  # fmt: skip
    top = {"index": 7, "synset": synset, "label": label, "score": score}
    return Prediction.model_validate(
        {
            "top_class": top, "top_k": [top], "glimpses": glimpses, "coverage": 0.321,
            "full_image": top,
            "preprocessing": {
                "original_size": [375, 500],
                "crop_box": {"ymin": 0, "xmin": 62, "ymax": 375, "xmax": 437},
            },
        }
    )  # fmt: skip


def _render(width: int, out: Path | None) -> str:
    from rich.console import Console

    table = predictions_table(out)
    rows = [
        (
            Path("/data/imagenet-sample/validation/n02100236_German_short-haired_pointer.JPEG"),
            _prediction("German short-haired pointer", "n02100236", 0.98765),
        ),
        (Path("/home/someone/photos/holiday/IMG_20240801_101501.jpg"), _prediction("dog", "", 0.5)),
        (Path("[red]x[/red].jpg"), _prediction("[bold]vehicle[/bold]", "", 0.25)),
    ]
    for image, prediction in rows:
        row = prediction_row(image, prediction)
        if out is not None:
            row.append(f"{image.stem}.glimpses.jpg")
        table.add_row(*row)
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(table)
    return console.file.getvalue()


@pytest.mark.parametrize("width", [80, 100])
@pytest.mark.parametrize("out", [None, Path("/tmp/some/annotated/images")])
def test_class_and_score_always_show_whole(width, out):
    """The full path and the glimpse list used to take an 80- or 100-column terminal, squeezing
    class and score to nothing: now they shrink instead, and the answer shows whole."""
    text = _render(width, out)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    for whole in ("German short-haired pointer", "(n02100236)", "0.988", "0.500", "0.250"):
        assert sum(whole in line for line in lines) == 1, (whole, text)
    assert sum(line.startswith("│ ") and " dog " in line for line in lines) == 1
    assert "[bold]vehicle[/bold]" in text  # a label is shown as it is, never read as markup
    assert "validation" not in text and "holiday" not in text  # names, not paths
    assert "()" not in text  # a custom-label model has no synset: nothing in brackets
    if out is not None:
        assert f"annotated images in {out}" in " ".join(text.split())


def test_class_text_shows_what_the_model_returns():
    assert class_text(_prediction("tabby", "n02123045", 1.0).top_class) == "tabby\n(n02123045)"
    assert class_text(_prediction("vehicle", "", 1.0).top_class) == "vehicle"
    assert class_text(_prediction("", "n02123045", 1.0).top_class) == "n02123045"
    assert class_text(_prediction("", "", 1.0).top_class) == "class 7"
