"""The photos `glimpse train` learns from, read from a Vertex AI import file.

Users who already label data for Vertex AI single-label image classification have their
dataset as an import file; reading the same file means they do not convert anything:

- CSV, one photo a line: `[ML_USE,]IMAGE_URI,LABEL` (ML_USE `training`, `validation` or
  `test`, any case; quoted fields allowed);
- JSON Lines: `{"imageGcsUri": ..., "classificationAnnotation": {"displayName": ...},
  "dataItemResourceLabels": {"aiplatform.googleapis.com/ml_use": ...}}`.

Import files can hold millions of lines on Cloud Storage, so the file is streamed line by line
and never held whole; what is kept grows with the photos (the examples and an 8-byte digest per
photo for duplicates), not with the text. A line that cannot be used is reported as a `BadLine`
rather than failing the file, as Vertex AI does; only a dataset that cannot be trained at all
(too few labels or training photos) raises `DatasetError`.

Lines without ML_USE get a split here, 80/10/10 stratified by label, decided as the line is read
(no second pass), deterministic for a seed and a file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import posixpath
import random
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

SPLITS = ("training", "validation", "test")
MAX_LABEL_CHARS = 64  # a label longer than this is a bad line
MIN_TRAINING_PHOTOS = 2  # per label; fewer -> DatasetError naming the labels and the minimum
# A line longer than this is not an import file line (a binary file, a file without newlines):
# the file is refused rather than read into memory looking for the end of the line.
MAX_LINE_CHARS = 1 << 20

ML_USE_KEY = "aiplatform.googleapis.com/ml_use"
# The assigned split of lines without ML_USE: 8 training, 1 validation, 1 test in each 10.
_SPLIT_CYCLE = ("training",) * 8 + ("validation", "test")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# What surrogateescape makes of bytes that are not UTF-8; the strict codec never yields these.
_UNDECODED = re.compile("[\udc80-\udcff]")
_MAX_LISTED = 20  # labels or bad lines named in one error message

OpenRead = Callable[[str], IO[bytes]]


@dataclass(frozen=True, slots=True)  # slots: one per photo, millions of them
class Example:
    line: int  # 1-based line number in the import file
    uri: str  # resolved: absolute local path or gs://...
    label: str
    split: str  # one of SPLITS (given, or assigned)


@dataclass(frozen=True)  # no slots: few, and callers write them out with __dict__
class BadLine:
    line: int
    reason: str


@dataclass
class ImportReport:
    examples: list[Example]
    labels: list[str]  # sorted: the class order of the model
    bad_lines: list[BadLine]
    duplicates: int  # later lines repeating an earlier URI (the first is kept)
    split_given: bool  # True when every kept line gave ML_USE
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # label -> split -> photos

    def split(self, name: str) -> list[Example]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}: one of {', '.join(SPLITS)}")
        return [e for e in self.examples if e.split == name]

    def summary_rows(self) -> list[tuple[str, int, int, int]]:
        """(label, training, validation, test) per label, in class order, for a table."""
        return [
            (label, *(self.counts.get(label, {}).get(s, 0) for s in SPLITS))
            for label in self.labels
        ]


class DatasetError(ValueError):
    """The dataset cannot be trained; the message says why and what to do.

    `report` is what was read (None if nothing was), so a caller can still show the table of
    photos per label and split that explains the error."""

    def __init__(self, message: str, report: ImportReport | None = None):
        super().__init__(message)
        self.report = report


# -- reading lines -------------------------------------------------------------------------


def _local_path(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def _default_open_read(path: str) -> IO[bytes]:
    if path.startswith("gs://"):
        # Imported here: reading a local file must not need (or import) Cloud Storage.
        from service.batch.storage import Storage

        return Storage().open_read(path)
    return open(_local_path(path), "rb")  # closed by _numbered_lines


def _numbered_lines(
    import_file: str, open_read: OpenRead | None
) -> Iterator[tuple[int, str, bool]]:
    """(line number, stripped text, valid UTF-8) for every non-blank line.

    Bad bytes are decoded as lone surrogates (surrogateescape) so that one mis-encoded line is
    reported on its own instead of ending the read. The io module decodes in chunks, in C:
    decoding each line in Python was most of the time spent on a large file."""
    binary = (open_read or _default_open_read)(import_file)
    # utf-8-sig: spreadsheet exports start with a byte order mark. newline="\n": a stray \r
    # does not end a line, so line numbers are the ones an editor shows.
    stream = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="\n")
    try:
        number = 0
        while text := stream.readline(MAX_LINE_CHARS + 1):
            number += 1
            if len(text) > MAX_LINE_CHARS and not text.endswith("\n"):
                raise DatasetError(
                    f"{import_file}: line {number} is longer than {MAX_LINE_CHARS} characters; "
                    "an import file has one photo a line: is this the right file?"
                )
            text = text.strip()
            if text:
                yield number, text, _UNDECODED.search(text) is None
    finally:
        stream.close()  # closes the binary stream too


def iter_lines(import_file: str, open_read: OpenRead | None = None) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line, streamed: numbers count blank lines too, so
    they match what an editor shows. Bytes that are not UTF-8 come back as lone surrogates
    (U+DC80..U+DCFF); `read_import_file` reports those lines as bad. A line longer than
    MAX_LINE_CHARS raises DatasetError: the file is not an import file."""
    for number, text, _ in _numbered_lines(import_file, open_read):
        yield number, text


# -- one line ------------------------------------------------------------------------------


class _Bad(Exception):
    """A line that cannot be used; the message is the BadLine's reason."""


def _folder(import_file: str) -> str:
    """Where relative image paths start: the import file's folder, local or gs://."""
    if import_file.startswith("gs://"):
        return import_file.rpartition("/")[0] if import_file.count("/") > 2 else import_file
    return os.path.dirname(os.path.abspath(_local_path(import_file)))


def _has_control(text: str) -> bool:
    # isprintable() is False for every Cc and Cf character (and for some harmless ones, which
    # the exact test below lets through): most text is decided in C, without the loop.
    return not text.isprintable() and any(unicodedata.category(c) in ("Cc", "Cf") for c in text)


def _resolve(uri: str, folder: str) -> str:
    if not uri:
        raise _Bad("no image URI")
    if _has_control(uri):
        raise _Bad("image URI has control characters")
    if uri.startswith("gs://"):
        slash = uri.find("/", len("gs://"))
        if slash <= len("gs://") or slash == len(uri) - 1:
            raise _Bad(f"gs:// URI without bucket or object name: {uri!r}")
        return uri
    if uri.startswith("file://"):
        path = uri[len("file://") :]
        if path.startswith("localhost/"):
            path = path[len("localhost") :]
        if not path.startswith("/"):
            raise _Bad(f"file:// URI is not an absolute path: {uri!r}")
        return os.path.normpath(path)
    scheme = _SCHEME.match(uri)
    if scheme:
        raise _Bad(f"unsupported URI scheme {scheme.group()!r}: use gs://, file:// or a path")
    if os.path.isabs(uri):
        return os.path.normpath(uri)
    if folder.startswith("gs://"):
        bucket, _, base = folder[len("gs://") :].partition("/")
        name = posixpath.normpath(posixpath.join(base, uri))
        if name == ".." or name.startswith("../"):
            raise _Bad(f"relative path leaves the bucket: {uri!r}")
        return f"gs://{bucket}/{name}"
    return os.path.normpath(os.path.join(folder, uri))


def _ml_use(value: str) -> str | None:
    """The split a line gives, None when it gives none (empty ML_USE is no ML_USE)."""
    value = value.strip()
    if not value:
        return None
    lowered = value.lower()
    for split in SPLITS:
        if lowered == split:
            return split  # the constant itself: examples share it
    raise _Bad(f"unknown ml_use {value!r}")


def _csv_fields(text: str) -> tuple[str | None, str, str]:
    """(ml_use, uri, label) of a CSV line, unresolved and unchecked."""
    if '"' in text:
        try:
            fields = next(csv.reader((text,), strict=True))
        except csv.Error as e:
            raise _Bad(f"malformed CSV: {e}") from None
    else:  # what csv would make of it, at a fraction of the cost on a large file
        fields = text.split(",")
    if len(fields) == 3:
        return _ml_use(fields[0]), fields[1].strip(), fields[2]
    if len(fields) == 2:
        if fields[0].strip().lower() in SPLITS:
            raise _Bad("no label (ML_USE,IMAGE_URI without LABEL)")
        return None, fields[0].strip(), fields[1]
    raise _Bad(f"not 2 or 3 fields ([ML_USE,]IMAGE_URI,LABEL): {len(fields)}")


def _json_fields(text: str) -> tuple[str | None, str, str]:
    try:
        item = json.loads(text)
    except ValueError:
        raise _Bad("invalid JSON") from None
    if not isinstance(item, dict):
        raise _Bad("not a JSON object")
    uri = item.get("imageGcsUri")
    if not isinstance(uri, str) or not uri.strip():
        raise _Bad("no imageGcsUri")
    annotation = item.get("classificationAnnotation")
    label = annotation.get("displayName") if isinstance(annotation, dict) else None
    if not isinstance(label, str):
        raise _Bad("no classificationAnnotation.displayName")
    resource_labels = item.get("dataItemResourceLabels") or {}
    if not isinstance(resource_labels, dict):
        raise _Bad("dataItemResourceLabels is not an object")
    ml_use = resource_labels.get(ML_USE_KEY)
    if ml_use is not None and not isinstance(ml_use, str):
        raise _Bad(f"unknown ml_use {ml_use!r}")
    return (_ml_use(ml_use) if ml_use else None), uri.strip(), label


def _check_label(label: str) -> str:
    label = unicodedata.normalize("NFC", label.strip())
    if not label:
        raise _Bad("empty label")
    if len(label) > MAX_LABEL_CHARS:
        raise _Bad(f"label longer than {MAX_LABEL_CHARS} characters")
    if _has_control(label):
        raise _Bad("label has control characters")
    return label


# -- splits --------------------------------------------------------------------------------


class _Assigner:
    """Splits for lines without ML_USE: per label, the k-th photo takes slot
    `(k + offset) % 10` of a seeded shuffle of the 8/1/1 cycle. Counting per label keeps every
    label at 80/10/10 however the file is ordered, without a second pass; the per-label offset
    keeps small labels from all landing on the same slots. A label's first MIN_TRAINING_PHOTOS
    photos always train: otherwise a small label could lose them to validation and test, and a
    dataset would be refused or not depending on the seed."""

    def __init__(self, seed: int):
        cycle = list(_SPLIT_CYCLE)
        random.Random(seed).shuffle(cycle)
        self._cycle = tuple(cycle)
        self._seed = seed
        self._next: dict[str, list[int]] = {}  # label -> [k, offset]

    def _offset(self, label: str) -> int:
        # hashlib, not hash(): str hashes change between processes.
        digest = hashlib.blake2b(f"{self._seed}\0{label}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % len(self._cycle)

    def __call__(self, label: str) -> str:
        state = self._next.get(label)
        if state is None:
            state = self._next[label] = [0, self._offset(label)]
        k, offset = state
        state[0] = k + 1
        if k < MIN_TRAINING_PHOTOS:
            return "training"
        return self._cycle[(k + offset) % len(self._cycle)]


# -- the file ------------------------------------------------------------------------------


def _is_json_lines(import_file: str, first_line: str) -> bool:
    suffix = posixpath.splitext(import_file.lower())[1]
    return suffix in (".jsonl", ".json") or first_line.startswith("{")


def read_import_file(
    import_file: str, *, seed: int = 0, open_read: OpenRead | None = None
) -> ImportReport:
    """Every usable photo of the import file with its split, and what was left out and why.

    Raises DatasetError when the photos cannot train a classifier: fewer than 2 labels, or a
    label with fewer than MIN_TRAINING_PHOTOS training photos (the error carries the report)."""
    folder = _folder(import_file)
    assign = _Assigner(seed)
    examples: list[Example] = []
    bad_lines: list[BadLine] = []
    # raw label -> checked label: each label is checked once, and its examples share one string
    labels: dict[str, str] = {}
    interned: dict[str, str] = {}
    counts: dict[str, dict[str, int]] = {}
    seen: set[bytes] = set()  # 8-byte digests of kept URIs, not the strings
    duplicates = 0
    all_given = True
    parse: Callable[[str], tuple[str | None, str, str]] | None = None

    for number, text, valid in _numbered_lines(import_file, open_read):
        if parse is None:
            parse = _json_fields if _is_json_lines(import_file, text) else _csv_fields
        try:
            if not valid:
                raise _Bad("not valid UTF-8")
            ml_use, raw_uri, raw_label = parse(text)
            label = labels.get(raw_label)
            if label is None:
                label = _check_label(raw_label)
                label = labels[raw_label] = interned.setdefault(label, label)
            uri = _resolve(raw_uri, folder)
        except _Bad as e:
            bad_lines.append(BadLine(number, str(e)))
            continue
        digest = hashlib.blake2b(uri.encode(), digest_size=8).digest()
        if digest in seen:
            duplicates += 1
            continue
        seen.add(digest)
        if ml_use is None:
            all_given = False
            ml_use = assign(label)
        per_split = counts.get(label)
        if per_split is None:
            per_split = counts[label] = dict.fromkeys(SPLITS, 0)
        per_split[ml_use] += 1
        examples.append(Example(number, uri, label, ml_use))

    report = ImportReport(
        examples=examples,
        labels=sorted(counts),
        bad_lines=bad_lines,
        duplicates=duplicates,
        split_given=bool(examples) and all_given,
        counts=counts,
    )
    _check_trainable(import_file, report)
    return report


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def _check_trainable(import_file: str, report: ImportReport) -> None:
    if not report.examples and not report.bad_lines:
        raise DatasetError(f"{import_file}: the file has no lines: one photo a line.", report)
    if not report.examples:
        reasons = [f"line {b.line}: {b.reason}" for b in report.bad_lines[:3]]
        raise DatasetError(
            f"{import_file}: no usable lines ({len(report.bad_lines)} bad; {'; '.join(reasons)}). "
            "A line is [ML_USE,]IMAGE_URI,LABEL, or a JSON object with imageGcsUri and "
            "classificationAnnotation.displayName.",
            report,
        )
    if len(report.labels) < 2:
        raise DatasetError(
            f"{import_file}: training a classifier needs at least 2 labels, found "
            f"{len(report.labels)} ({_listed([repr(x) for x in report.labels])}): "
            "add photos of another label.",
            report,
        )
    short = []
    for label in report.labels:
        per_split = report.counts[label]
        have = per_split["training"]
        if have >= MIN_TRAINING_PHOTOS:
            continue
        note = " (only in validation/test)" if have == 0 else ""
        short.append(f"{label!r} has {have}{note}")
    if short:
        raise DatasetError(
            f"{import_file}: each label needs at least {MIN_TRAINING_PHOTOS} training photos: "
            f"{_listed(short)}. Add training photos of these labels, mark more of their lines "
            "ML_USE training, or remove them.",
            report,
        )
