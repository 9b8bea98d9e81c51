"""Reading Vertex AI import files for `glimpse train` (model_export/training/import_file.py):
the two formats, where image paths resolve, which lines are refused and why, the splits given
and assigned, the datasets that cannot be trained, and that large files are streamed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest

from model_export.training.import_file import (
    MAX_LABEL_CHARS,
    MIN_TRAINING_PHOTOS,
    SPLITS,
    BadLine,
    DatasetError,
    Example,
    ImportReport,
    iter_lines,
    read_import_file,
)

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]
REAL_EXAMPLE = ROOT.parent / "shared" / "data" / "superclasses-train.csv"
REAL_LABELS = ["bird", "cat", "dog", "fish", "insect", "primate", "reptile", "vehicle"]


def write(path: Path, text: str | bytes) -> str:
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return str(path)


def photos(label: str, n: int, split: str | None = None, prefix: str = "gs://b") -> list[str]:
    """CSV lines of n distinct photos of a label."""
    given = f"{split}," if split else ""
    return [f"{given}{prefix}/{label}/{i}.jpg,{label}" for i in range(n)]


def csv_file(tmp_path: Path, lines: list[str], name: str = "import.csv") -> str:
    return write(tmp_path / name, "\n".join(lines) + "\n")


def jsonl(uri: str, label: str, ml_use: str | None = None) -> str:
    item: dict = {"imageGcsUri": uri, "classificationAnnotation": {"displayName": label}}
    if ml_use is not None:
        item["dataItemResourceLabels"] = {"aiplatform.googleapis.com/ml_use": ml_use}
    return json.dumps(item)


BASE = photos("daisy", 3) + photos("rose", 3)  # trainable padding for tests of single lines


# -- formats -------------------------------------------------------------------------------


def test_csv_with_ml_use(tmp_path: Path) -> None:
    lines = [
        "training,gs://b/d1.jpg,daisy",
        "TRAINING,gs://b/d2.jpg,daisy",
        "Validation,gs://b/d3.jpg,daisy",
        "test,gs://b/d4.jpg,daisy",
        "training,gs://b/r1.jpg,rose",
        "training,gs://b/r2.jpg,rose",
    ]
    report = read_import_file(csv_file(tmp_path, lines))
    assert report.split_given
    assert report.labels == ["daisy", "rose"]
    assert report.examples[0] == Example(1, "gs://b/d1.jpg", "daisy", "training")
    assert [e.split for e in report.examples] == [
        "training",
        "training",
        "validation",
        "test",
        "training",
        "training",
    ]
    assert report.counts == {
        "daisy": {"training": 2, "validation": 1, "test": 1},
        "rose": {"training": 2, "validation": 0, "test": 0},
    }
    assert report.summary_rows() == [("daisy", 2, 1, 1), ("rose", 2, 0, 0)]
    assert [e.uri for e in report.split("validation")] == ["gs://b/d3.jpg"]
    with pytest.raises(ValueError, match="unknown split"):
        report.split("train")


def test_csv_without_ml_use_assigns_every_line(tmp_path: Path) -> None:
    report = read_import_file(csv_file(tmp_path, photos("daisy", 20) + photos("rose", 20)))
    assert not report.split_given
    assert len(report.examples) == 40
    assert all(e.split in SPLITS for e in report.examples)
    assert sum(report.counts["daisy"].values()) == 20


def test_mixed_file_assigns_only_lines_without_ml_use(tmp_path: Path) -> None:
    lines = photos("daisy", 10, "test") + photos("rose", 10) + photos("daisy", 10, prefix="gs://c")
    report = read_import_file(csv_file(tmp_path, lines))
    assert not report.split_given
    assert all(e.split == "test" for e in report.examples[:10])
    assert report.examples[10].split == "training"  # the first unassigned rose
    assert report.examples[20].split == "training"  # the first unassigned daisy


def test_empty_ml_use_is_no_ml_use(tmp_path: Path) -> None:
    report = read_import_file(csv_file(tmp_path, [",gs://b/x.jpg,daisy", *BASE]))
    assert report.examples[0].split == "training"
    assert not report.split_given


def test_quoted_csv(tmp_path: Path) -> None:
    lines = [
        '"training","gs://b/a, b.jpg","daisy, white"',
        '"gs://b/c.jpg","daisy, white"',
        'gs://b/d.jpg,"say ""cheese"""',
        'gs://b/e.jpg,say "cheese"',
        *BASE,
    ]
    report = read_import_file(csv_file(tmp_path, lines))
    assert report.examples[0] == Example(1, "gs://b/a, b.jpg", "daisy, white", "training")
    assert report.examples[1].label == "daisy, white"
    assert report.examples[2].label == 'say "cheese"'
    assert report.bad_lines == []
    assert report.counts['say "cheese"']["training"] == 2


def test_blank_lines_skipped_and_numbered(tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv", "\n  \ngs://b/x.jpg,daisy\r\n\n" + "\n".join(BASE))
    assert list(iter_lines(path))[0] == (3, "gs://b/x.jpg,daisy")
    report = read_import_file(path)
    assert report.examples[0].line == 3
    assert report.examples[-1].line == 5 + len(BASE) - 1


def test_byte_order_mark_ignored(tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv", b"\xef\xbb\xbf" + "\n".join(BASE).encode())
    assert read_import_file(path).examples[0].uri == "gs://b/daisy/0.jpg"


def test_jsonl(tmp_path: Path) -> None:
    lines = [
        jsonl("gs://b/d1.jpg", "daisy", "training"),
        jsonl("gs://b/d2.jpg", "daisy", "TEST"),
        jsonl("gs://b/d3.jpg", "daisy", "training"),
        jsonl("gs://b/r1.jpg", "rose", "training"),
        jsonl("gs://b/r2.jpg", "rose", "validation"),
        jsonl("gs://b/r3.jpg", "rose", "training"),
    ]
    report = read_import_file(write(tmp_path / "data.jsonl", "\n".join(lines)))
    assert report.split_given
    assert report.examples[1] == Example(2, "gs://b/d2.jpg", "daisy", "test")
    assert report.summary_rows() == [("daisy", 2, 0, 1), ("rose", 2, 1, 0)]


def test_jsonl_found_by_first_line_and_ml_use_optional(tmp_path: Path) -> None:
    lines = [jsonl(f"gs://b/{label}{i}.jpg", label) for label in ("a", "b") for i in range(5)]
    report = read_import_file(write(tmp_path / "import.txt", "\n\n" + "\n".join(lines)))
    assert len(report.examples) == 10
    assert not report.split_given


def test_jsonl_bad_lines(tmp_path: Path) -> None:
    good = [jsonl(f"gs://b/{label}{i}.jpg", label) for label in ("a", "b") for i in range(3)]
    bad = [
        "{not json",
        "[1, 2]",
        json.dumps({"classificationAnnotation": {"displayName": "a"}}),
        json.dumps({"imageGcsUri": "gs://b/x.jpg"}),
        json.dumps({"imageGcsUri": "gs://b/x.jpg", "classificationAnnotation": "a"}),
        jsonl("gs://b/y.jpg", "a", "holdout"),
        json.dumps(
            {
                "imageGcsUri": "gs://b/z.jpg",
                "classificationAnnotation": {"displayName": "a"},
                "dataItemResourceLabels": ["training"],
            }
        ),
    ]
    report = read_import_file(write(tmp_path / "f.jsonl", "\n".join(good + bad)))
    assert [b.reason for b in report.bad_lines] == [
        "invalid JSON",
        "not a JSON object",
        "no imageGcsUri",
        "no classificationAnnotation.displayName",
        "no classificationAnnotation.displayName",
        "unknown ml_use 'holdout'",
        "dataItemResourceLabels is not an object",
    ]
    assert [b.line for b in report.bad_lines] == list(range(7, 14))


# -- where images are ----------------------------------------------------------------------


def test_local_paths_resolve(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    lines = [
        "photos/a.jpg,daisy",  # relative to the import file's folder
        "./photos/../photos/b.jpg,daisy",
        f"file://{tmp_path}/elsewhere/c.jpg,rose",
        f"file://localhost{tmp_path}/elsewhere/d.jpg,rose",
        "/abs/e.jpg,rose",
    ]
    report = read_import_file(csv_file(folder, lines))
    assert [e.uri for e in report.examples] == [
        str(folder / "photos" / "a.jpg"),
        str(folder / "photos" / "b.jpg"),
        str(tmp_path / "elsewhere" / "c.jpg"),
        str(tmp_path / "elsewhere" / "d.jpg"),
        "/abs/e.jpg",
    ]


def test_relative_import_file_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    csv_file(tmp_path / "sub", ["a.jpg,x", "b.jpg,x", "c.jpg,y", "d.jpg,y"])
    monkeypatch.chdir(tmp_path)
    report = read_import_file("sub/import.csv")
    assert report.examples[0].uri == str(tmp_path / "sub" / "a.jpg")
    report = read_import_file(f"file://{tmp_path}/sub/import.csv")
    assert report.examples[0].uri == str(tmp_path / "sub" / "a.jpg")


def test_gs_uris_kept(tmp_path: Path) -> None:
    report = read_import_file(csv_file(tmp_path, ["gs://other/deep/./x y.jpg,daisy", *BASE]))
    assert report.examples[0].uri == "gs://other/deep/./x y.jpg"


def opener(files: dict[str, bytes]):
    opened = []

    def open_read(path: str) -> io.BytesIO:
        opened.append(path)
        return io.BytesIO(files[path])

    open_read.opened = opened  # type: ignore[attr-defined]
    return open_read


def test_relative_to_gs_import_file() -> None:
    text = "\n".join(
        [
            "a.jpg,daisy",
            "sub/b.jpg,daisy",
            "../up/c.jpg,rose",
            "gs://elsewhere/d.jpg,rose",
            "../../../out.jpg,rose",
        ]
    ).encode()
    read = opener({"gs://bucket/sets/v1/import.csv": text})
    report = read_import_file("gs://bucket/sets/v1/import.csv", open_read=read)
    assert [e.uri for e in report.examples] == [
        "gs://bucket/sets/v1/a.jpg",
        "gs://bucket/sets/v1/sub/b.jpg",
        "gs://bucket/sets/up/c.jpg",
        "gs://elsewhere/d.jpg",
    ]
    assert report.bad_lines == [BadLine(5, "relative path leaves the bucket: '../../../out.jpg'")]
    assert read.opened == ["gs://bucket/sets/v1/import.csv"]


def test_gs_import_file_at_bucket_root() -> None:
    read = opener({"gs://bucket/i.csv": b"a.jpg,x\nb.jpg,x\nc.jpg,y\nd.jpg,y\n"})
    report = read_import_file("gs://bucket/i.csv", open_read=read)
    assert report.examples[0].uri == "gs://bucket/a.jpg"


def test_gs_import_file_opened_through_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.batch import storage

    text = "\n".join(BASE).encode()
    monkeypatch.setattr(storage.Storage, "open_read", lambda self, path: io.BytesIO(text))
    report = read_import_file("gs://bucket/import.csv")
    assert len(report.examples) == len(BASE)


def test_local_file_does_not_import_cloud_storage(tmp_path: Path) -> None:
    """Training on local files must work without the gcs extra, and start without its import."""
    path = csv_file(tmp_path, BASE)
    code = (
        "import sys\n"
        "from model_export.training.import_file import read_import_file\n"
        f"read_import_file({path!r})\n"
        "loaded = [m for m in sys.modules if m.startswith(('google.cloud.', 'service.batch'))]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


# -- bad lines -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("gs://b/x.jpg", "not 2 or 3 fields ([ML_USE,]IMAGE_URI,LABEL): 1"),
        ("training,gs://b/x.jpg,daisy,rose", "not 2 or 3 fields ([ML_USE,]IMAGE_URI,LABEL): 4"),
        ("train,gs://b/x.jpg,daisy", "unknown ml_use 'train'"),
        ("training,gs://b/x.jpg", "no label (ML_USE,IMAGE_URI without LABEL)"),
        ("gs://b/x.jpg,", "empty label"),
        ("gs://b/x.jpg,   ", "empty label"),
        (",daisy", "no image URI"),
        ("gs://b/x.jpg,dai\tsy", "label has control characters"),
        ("gs://b/x.jpg,dai\x00sy", "label has control characters"),
        ("gs://b/x.jpg,dai\u200bsy", "label has control characters"),  # zero width space: Cf
        ("gs://b/x.jpg,dai\rsy", "label has control characters"),
        ("gs://b/x.jpg," + "x" * (MAX_LABEL_CHARS + 1), "label longer than 64 characters"),
        ("gs://b/x\x07.jpg,daisy", "image URI has control characters"),
        ("gs://,daisy", "gs:// URI without bucket or object name: 'gs://'"),
        ("gs://bucket,daisy", "gs:// URI without bucket or object name: 'gs://bucket'"),
        ("gs://bucket/,daisy", "gs:// URI without bucket or object name: 'gs://bucket/'"),
        (
            "file://relative/x.jpg,daisy",
            "file:// URI is not an absolute path: 'file://relative/x.jpg'",
        ),
        (
            "https://h/x.jpg,daisy",
            "unsupported URI scheme 'https://': use gs://, file:// or a path",
        ),
        ('gs://b/x.jpg,"daisy', "malformed CSV: unexpected end of data"),
    ],
)
def test_bad_csv_line(tmp_path: Path, line: str, reason: str) -> None:
    report = read_import_file(csv_file(tmp_path, [*BASE, line]))
    assert report.bad_lines == [BadLine(len(BASE) + 1, reason)]
    assert len(report.examples) == len(BASE)


def test_bad_line_serialises() -> None:
    """The trainer writes bad lines into its report as their __dict__."""
    assert BadLine(3, "invalid JSON").__dict__ == {"line": 3, "reason": "invalid JSON"}


def test_invalid_utf8_is_one_bad_line(tmp_path: Path) -> None:
    text = (
        "\n".join(BASE[:3]).encode() + b"\ngs://b/x.jpg,dai\xffsy\n" + "\n".join(BASE[3:]).encode()
    )
    path = write(tmp_path / "f.csv", text)
    report = read_import_file(path)
    assert report.bad_lines == [BadLine(4, "not valid UTF-8")]
    assert len(report.examples) == len(BASE)
    assert list(iter_lines(path))[3] == (4, "gs://b/x.jpg,dai\udcffsy")


def test_label_edges(tmp_path: Path) -> None:
    longest = "y" * MAX_LABEL_CHARS
    lines = [
        f"gs://b/1.jpg,{longest}",
        f"gs://b/2.jpg,  {longest}  ",  # stripped, then measured
        "gs://b/3.jpg,Daisy",  # labels are case-sensitive
        "gs://b/4.jpg,Daisy",
        "gs://b/5.jpg,cafe\u0301",  # decomposed: one label with the composed spelling
        "gs://b/6.jpg,caf\u00e9",
        "gs://b/7.jpg,多肉植物",
        "gs://b/8.jpg,多肉植物",
        *BASE,
    ]
    report = read_import_file(csv_file(tmp_path, lines))
    assert report.bad_lines == []
    assert report.labels == sorted(["Daisy", "café", "daisy", "rose", longest, "多肉植物"])
    assert report.examples[0].label is report.examples[1].label  # one string per label


def test_over_long_line_refuses_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from model_export.training import import_file

    monkeypatch.setattr(import_file, "MAX_LINE_CHARS", 100)
    path = csv_file(tmp_path, [*BASE, "gs://b/" + "x" * 200 + ".jpg,daisy"])
    with pytest.raises(DatasetError, match="line 7 is longer than 100 characters"):
        read_import_file(path)


# -- duplicates ----------------------------------------------------------------------------


def test_duplicates_counted_once_first_kept(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    lines = [
        "test,x.jpg,daisy",
        f"{folder}/x.jpg,rose",  # the same file, another label: still a duplicate
        f"file://{folder}/x.jpg,daisy",
        "./sub/../x.jpg,daisy",
        "gs://b/y.jpg,daisy",
        "gs://b/y.jpg,daisy",
        "gs://b/Y.jpg,daisy",  # object names are case-sensitive
        *photos("daisy", 2, prefix="gs://c"),
        *photos("rose", 2, prefix="gs://c"),
    ]
    report = read_import_file(csv_file(folder, lines))
    assert report.duplicates == 4
    assert report.examples[0] == Example(1, str(folder / "x.jpg"), "daisy", "test")
    assert [e.line for e in report.examples] == [1, 5, 7, 8, 9, 10, 11]


# -- datasets that cannot be trained -------------------------------------------------------


def test_one_label(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="at least 2 labels, found 1 \\('daisy'\\)") as e:
        read_import_file(csv_file(tmp_path, photos("daisy", 10)))
    assert e.value.report is not None
    assert e.value.report.summary_rows()[0][0] == "daisy"


def test_no_usable_lines(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no usable lines \\(2 bad; line 1: not 2 or 3"):
        read_import_file(csv_file(tmp_path, ["a", "b"]))
    with pytest.raises(DatasetError, match="the file has no lines"):
        read_import_file(write(tmp_path / "empty.csv", "\n\n"))


def test_label_with_one_training_photo(tmp_path: Path) -> None:
    lines = [*photos("daisy", 5, "training"), "training,gs://b/r.jpg,rose", "test,gs://b/s,rose"]
    with pytest.raises(DatasetError) as e:
        read_import_file(csv_file(tmp_path, lines))
    message = str(e.value)
    assert f"at least {MIN_TRAINING_PHOTOS} training photos" in message
    assert "'rose' has 1" in message
    assert "daisy" not in message


def test_label_only_in_validation_and_test(tmp_path: Path) -> None:
    lines = [*BASE, "validation,gs://b/t1.jpg,tulip", "test,gs://b/t2.jpg,tulip"]
    with pytest.raises(DatasetError, match="'tulip' has 0 \\(only in validation/test\\)"):
        read_import_file(csv_file(tmp_path, lines))


def test_single_photo_label_without_ml_use(tmp_path: Path) -> None:
    """Its one photo trains (the first photo of a label always does), but one is too few."""
    with pytest.raises(DatasetError, match="'tulip' has 1"):
        read_import_file(csv_file(tmp_path, [*BASE, "gs://b/t.jpg,tulip"]))


def test_dataset_error_is_a_value_error() -> None:
    assert issubclass(DatasetError, ValueError)


# -- assigned splits -----------------------------------------------------------------------


def generated(tmp_path: Path, n: int = 1000, labels: int = 4) -> str:
    names = [f"label{i}" for i in range(labels)]
    return csv_file(tmp_path, [f"gs://b/{i}.jpg,{names[i % labels]}" for i in range(n)])


def test_assignment_deterministic_per_seed(tmp_path: Path) -> None:
    path = generated(tmp_path)
    splits = [e.split for e in read_import_file(path, seed=7).examples]
    assert splits == [e.split for e in read_import_file(path, seed=7).examples]
    assert splits != [e.split for e in read_import_file(path, seed=8).examples]
    assert [e.split for e in read_import_file(path).examples] == [
        e.split for e in read_import_file(path, seed=0).examples
    ]


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_assignment_80_10_10_per_label(tmp_path: Path, seed: int) -> None:
    report = read_import_file(generated(tmp_path), seed=seed)
    assert len(report.labels) == 4
    for label in report.labels:
        per_split = report.counts[label]
        total = sum(per_split.values())
        assert total == 250
        assert 0.75 <= per_split["training"] / total <= 0.85
        assert 0.05 <= per_split["validation"] / total <= 0.15
        assert 0.05 <= per_split["test"] / total <= 0.15
        first = next(e for e in report.examples if e.label == label)
        assert first.split == "training"


def test_first_photos_of_every_label_train(tmp_path: Path) -> None:
    """Many small labels: whatever the seed, each label's first MIN_TRAINING_PHOTOS photos
    train, so assignment alone never makes a dataset untrainable."""
    lines = [f"gs://b/{label}/{i}.jpg,l{label}" for i in range(3) for label in range(100)]
    for seed in range(5):
        report = read_import_file(csv_file(tmp_path, lines), seed=seed)
        firsts: dict[str, list[str]] = {}
        for e in report.examples:
            firsts.setdefault(e.label, []).append(e.split)
        assert all(
            s[:MIN_TRAINING_PHOTOS] == ["training"] * MIN_TRAINING_PHOTOS for s in firsts.values()
        )
        assert {s[2] for s in firsts.values()} == set(SPLITS)  # the third is assigned


# -- large files ---------------------------------------------------------------------------


def test_large_file_is_streamed(tmp_path: Path) -> None:
    """200k lines (each photo listed 50 times, so what is kept is small): a reader that held
    the text, or every line, would peak above the file's size."""
    path = tmp_path / "big.csv"
    with path.open("w") as f:
        for i in range(200_000):
            f.write(f"gs://bucket/photos/folder/img{i % 4000:06d}.jpg,label{i % 4}\n")
    size = path.stat().st_size
    start = time.perf_counter()
    tracemalloc.start()
    try:
        report = read_import_file(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(report.examples) == 4000
    assert report.duplicates == 196_000
    assert peak < size / 2, (peak, size)  # about 1/8
    assert time.perf_counter() - start < 30  # ~2 s; a guard against quadratic work


# -- the real example ----------------------------------------------------------------------


@pytest.mark.skipif(not REAL_EXAMPLE.exists(), reason=f"no {REAL_EXAMPLE}")
def test_real_example() -> None:
    report = read_import_file(str(REAL_EXAMPLE), seed=0)
    assert isinstance(report, ImportReport)
    assert report.labels == REAL_LABELS
    assert len(report.examples) == 158
    assert report.bad_lines == [] and report.duplicates == 0
    assert not report.split_given
    samples = REAL_EXAMPLE.parent / "imagenet-sample"
    for e in report.examples:
        assert Path(e.uri).parent == samples and Path(e.uri).is_file(), e
    assert Counter(e.label for e in report.examples)["dog"] == 59
    for label, training, validation, test in report.summary_rows():
        assert training >= MIN_TRAINING_PHOTOS
        assert training + validation + test == sum(report.counts[label].values())
    assert os.path.isabs(report.examples[0].uri)
