"""`glimpse train` end to end on a generated dataset with the tiny backbone (random weights:
the numbers mean nothing, the layout, labels, evaluation, cache and refusals do), and the
example import file with the real backbone in the slow tier."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from model_export.contract import LABELS_FILE, MODEL_INFO_FILE, SIGNATURE_NAMES
from model_export.training.evaluation import CONFUSION_PNG, EVALUATION_JSON, EVALUATION_MD
from model_export.training.import_file import DatasetError
from model_export.training.trainer import Cancelled, Trainer, TrainingError, TrainSpec, train
from tests.conftest import encode

COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _dataset(folder: Path, per_label: int = 8, extra_lines: list[str] | None = None) -> Path:
    """Solid colours with noise and a bright square somewhere: PNGs and a CSV import file
    without ML_USE (so the split is assigned), paths relative to the file."""
    rng = np.random.default_rng(0)
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    lines = []
    for label, rgb in COLOURS.items():
        for i in range(per_label):
            pixels = np.clip(rng.normal(rgb, 25, (96, 128, 3)), 0, 255).astype(np.uint8)
            y, x = rng.integers(0, 60), rng.integers(0, 90)
            pixels[y : y + 30, x : x + 30] = 255
            (folder / "photos" / f"{label}{i}.png").write_bytes(encode(pixels))
            lines.append(f"photos/{label}{i}.png,{label}")
    path = folder / "import.csv"
    path.write_text("\n".join(lines + (extra_lines or [])) + "\n")
    return path


def _spec(tmp_path: Path, import_file: Path, **kw) -> TrainSpec:
    return TrainSpec(
        import_file=str(import_file),
        model_name=kw.pop("model_name", "colours"),
        model_base=tmp_path / "models",
        backbone="tiny",
        cache_dir=tmp_path / "cache",
        **kw,
    )


BAD_LINES = ["photos/missing.png,red", "photos/broken.png,green"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run on 24 good photos and 2 bad lines (a missing and an undecodable photo)."""
    tmp = tmp_path_factory.mktemp("train")
    (tmp / "photos").mkdir()
    (tmp / "photos" / "broken.png").write_bytes(b"\x89PNG not really")
    import_file = _dataset(tmp, extra_lines=BAD_LINES)
    stages: list[str] = []
    report = train(
        _spec(tmp, import_file, max_bad_fraction=0.1),
        on_progress=lambda s, d, t: stages.append(s),
    )
    return tmp, import_file, report, stages


def test_a_version_in_the_imagenet_models_layout(trained):
    tmp, _, report, stages = trained
    version = tmp / "models" / "colours" / "1"
    assert report.path == version
    from model_export.signatures import signature_names

    assert signature_names(version) == set(SIGNATURE_NAMES)
    rows = (version / "assets" / LABELS_FILE).read_text().splitlines()
    assert rows == ["\tblue", "\tgreen", "\tred"]  # sorted labels, no invented synset
    info = json.loads((version / "assets" / MODEL_INFO_FILE).read_text())
    assert info["labels"] == {"source": "import file", "count": 3}
    assert info["config"]["max_top_k"] == 3 and info["config"]["default_top_k"] == 3
    assert info["training"]["splits"] == report.counts
    for name in (EVALUATION_JSON, EVALUATION_MD, CONFUSION_PNG, "training.json"):
        assert (version / "assets.extra" / name).stat().st_size > 0
    assert not list((tmp / "models" / "colours").glob(".*"))  # nothing left aside
    assert {"view features", "glimpse features"} <= set(stages)


def test_the_split_is_stratified_and_reported(trained):
    _, _, report, _ = trained
    assert sum(report.counts.values()) == 24
    for label in COLOURS:
        assert report.split_counts[label]["training"] >= 5
    assert not report.split_given


def test_the_evaluation_has_vertex_shape_and_glimpse_bars(trained):
    tmp, _, report, _ = trained
    body = json.loads((report.path / "assets.extra" / EVALUATION_JSON).read_text())
    assert body["metricsSchemaUri"].endswith("classification_metrics_1.0.0.yaml")
    cm = body["metrics"]["confusionMatrix"]
    assert [s["displayName"] for s in cm["annotationSpecs"]] == ["blue", "green", "red"]
    test_photos = report.counts["test"]
    assert sum(map(sum, cm["rows"])) == test_photos == body["metadata"]["testPhotos"]
    meta = body["metadata"]
    assert set(meta["glimpseTop1"]) == {"1", "2", "4", "6"}
    assert meta["distinctGlimpses"] == 6.0
    assert 0.0 < meta["coverage"] <= 1 / 3 + 1e-6
    markdown = (report.path / "assets.extra" / EVALUATION_MD).read_text()
    assert "| glimpses, T=6 |" in markdown and "| red |" in markdown


def test_the_exported_model_answers_with_the_users_labels(trained):
    import tensorflow as tf

    tmp, import_file, report, _ = trained
    fn = tf.saved_model.load(str(report.path)).signatures["serving_default"]
    photo = (import_file.parent / "photos" / "red0.png").read_bytes()
    out = fn(input_image_bytes=tf.constant([photo]))
    names = [n.decode() for n in out["class_names"][0].numpy()]
    assert sorted(names) == ["blue", "green", "red"]  # top 5 clipped to the 3 classes
    assert [s.decode() for s in out["synsets"][0].numpy()] == ["", "", ""]
    assert out["full_image_name"][0].numpy().decode() in COLOURS


def test_a_served_model_name_needs_a_new_version(trained):
    tmp, import_file, _, _ = trained
    with pytest.raises(TrainingError, match="pass --version"):
        train(_spec(tmp, import_file))
    with pytest.raises(TrainingError, match="versions are immutable"):
        train(_spec(tmp, import_file, version=1))
    with pytest.raises(TrainingError, match="model name"):
        train(_spec(tmp, import_file, model_name="../escape"))


def test_unreadable_photos_are_skipped_and_listed_with_their_line(trained):
    _, _, report, _ = trained
    reasons = {(b.line, b.reason) for b in report.bad_images}
    assert reasons == {
        (25, "no such file"),
        (26, "not a JPEG, PNG, GIF or BMP image the model can decode"),
    }
    assert sum(report.counts.values()) == 24


def test_more_bad_lines_than_allowed_fail_the_run(trained):
    tmp, import_file, _, _ = trained
    with pytest.raises(TrainingError, match="2 of 26 lines.*above the allowed 5%"):
        train(_spec(tmp, import_file, model_name="strict"))
    assert not (tmp / "models" / "strict").exists()


def test_one_label_is_refused_before_any_work(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("a.png,cat\nb.png,cat\nc.png,cat\n")
    with pytest.raises(DatasetError, match="at least 2 labels"):
        train(_spec(tmp_path, path))
    assert not (tmp_path / "cache").exists()


def test_a_cancelled_run_leaves_no_version(tmp_path):
    import_file = _dataset(tmp_path)
    cancel = threading.Event()

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "glimpse features":
            cancel.set()

    with pytest.raises(Cancelled):
        Trainer(_spec(tmp_path, import_file), progress, cancel).run()
    assert not (tmp_path / "models" / "colours").exists() or not any(
        (tmp_path / "models" / "colours").iterdir()
    )


def test_an_interrupted_export_leaves_no_half_written_version(trained, monkeypatch):
    """Killed while the version's last files are written (features from the cache)."""
    import model_export.training.evaluation as evaluation

    tmp, import_file, _, _ = trained

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "confusion_png", boom)
    with pytest.raises(KeyboardInterrupt):
        train(_spec(tmp, import_file, model_name="interrupted", max_bad_fraction=0.1))
    folder = tmp / "models" / "interrupted"
    assert not folder.exists() or not any(folder.iterdir())


def test_the_cli_adds_a_version_from_the_cache_and_exits_like_glimpse_batch(trained):
    from service.cli import app

    tmp, import_file, _, _ = trained
    args = ["train", str(import_file), "--model-name", "colours", "--backbone", "tiny",
            "--model-base", str(tmp / "models"), "--cache-dir", str(tmp / "cache"),
            "--max-bad-fraction", "0.1", "--quiet"]  # fmt: skip
    clash = CliRunner().invoke(app, args)
    assert clash.exit_code == 1 and "pass --version 2" in clash.output
    result = CliRunner().invoke(app, [*args, "--version", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp / "models" / "colours" / "2" / "saved_model.pb").exists()
    assert "24 photos (24 features and" in result.output  # no photo extracted again
    assert "glimpses/full" in result.output and "| red" not in result.output
    assert "skipped line 25" in result.output
    usage = CliRunner().invoke(app, [*args, "--runner", "spark"])
    assert usage.exit_code == 2


@pytest.mark.slow
def test_the_example_import_file_trains_through_the_cli():
    """`glimpse train` as users run it on the example (real backbone), in its own process
    (the Lite0 it builds and traces is not kept by the test run), started when the session
    began (tests/early.py)."""
    from tests import early

    if not early.EXAMPLE.exists():
        pytest.skip(f"no {early.EXAMPLE}")
    done, folder = early.finished(early.EXAMPLE_TRAINING)
    assert done.returncode == 0, done.stderr[-2000:]
    version = folder / "models" / "superclasses" / "1"
    labels = [
        row.split("\t")[1]
        for row in (version / "assets" / LABELS_FILE).read_text().split("\n")
        if row
    ]
    assert labels == ["bird", "cat", "dog", "fish", "insect", "primate", "reptile", "vehicle"]
    meta = json.loads((version / "assets.extra" / EVALUATION_JSON).read_text())["metadata"]
    # 13 test photos of the file's own split: a floor, not the product's number (bench).
    assert meta["glimpseTop1"]["6"] >= 0.75 and meta["distinctGlimpses"] == 6.0
    assert "158 photos" in done.stdout and "glimpses/full" in done.stdout


@pytest.mark.slow
def test_the_beam_runner_extracts_into_the_cache_the_trainer_reads(tmp_path):
    pytest.importorskip("apache_beam")
    import_file = _dataset(tmp_path, per_label=4)
    cancel = threading.Event()

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "view features":
            seen.append(done)
        if stage == "glimpse features":
            cancel.set()  # the point is the pipeline's cache; no need to export

    seen: list[int] = []
    trainer = Trainer(_spec(tmp_path, import_file, runner="beam"), progress, cancel)
    with pytest.raises(Cancelled):
        trainer.run()
    assert seen[-1] == 12 and trainer.cached_photos == 12  # the pipeline extracted them all


def test_the_feature_cache_on_cloud_storage(bucket):
    """What Dataflow workers and the trainer share: put and get through the storage emulator,
    a miss is None, an entry is whole."""
    from model_export.training.features import FeatureCache

    cache = FeatureCache(f"gs://{bucket.name}/cache", "r1-test")
    key = cache.key(b"photo bytes")
    assert cache.get(key) is None
    value = np.arange(12, dtype=np.float16).reshape(2, 2, 3)
    cache.put(key, value)
    got = cache.get(key)
    assert got is not None and got.dtype == np.float16 and np.array_equal(got, value)
    names = [blob.name for blob in bucket.list_blobs(prefix="cache/")]
    assert names == [f"cache/r1-test/{key[:2]}/{key}.npy"]
