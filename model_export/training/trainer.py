"""`glimpse train`: from a labelled import file to a new served version with an evaluation.

    import file ──> examples (split) ──> view features (cached by photo) ──> head A (full view)
       ──> glimpse canvases the where path picks with head A ──> canvas features (cached)
       ──> head B on views + canvases, L2 chosen on validation ──> export aside
       ──> evaluation on the test split (the exported model's functions) ──> moved into place

The backbone stays frozen (the pretrained ImageNet weights), so training is a pass or two of
the backbone per photo and a logistic regression; every step is deterministic for a seed.
A second head fit (B) on the canvases is what makes the glimpse answer good: the canvas is a
magnified union of parts on grey, which a head fitted on whole views reads a few points worse.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_export.training import evaluation
from model_export.training.import_file import Example, ImportReport, read_import_file

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DEFAULT_MAX_BAD_FRACTION = 0.05
BATCH = 16

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class TrainingError(ValueError):
    """Training cannot go on; the message says why and what to change."""


class Cancelled(RuntimeError):
    pass


@dataclass(frozen=True)
class TrainSpec:
    import_file: str
    model_name: str
    model_base: Path = Path("models")
    version: int | None = None  # None: a new model's version 1
    seed: int = 0
    backbone: str = "lite0"
    cache_dir: Path | str | None = None  # a folder, or gs://bucket/prefix
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION
    runner: str = "local"  # "beam": view features by an Apache Beam pipeline
    beam_args: tuple[str, ...] = ()


@dataclass
class BadImage:
    line: int
    uri: str
    reason: str


@dataclass
class TrainReport:
    path: Path
    labels: list[str]
    counts: dict[str, int]
    bad_lines: int
    bad_images: list[BadImage]
    duplicates: int
    split_given: bool
    chosen_c: float
    tried: list[dict]
    evaluation: dict
    seconds: dict[str, float] = field(default_factory=dict)
    photos_per_second: float = 0.0
    cached_photos: int = 0
    split_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # label -> split -> n
    canvas_cached: int = 0  # glimpse canvases found in the cache (same photo, same glimpses)


def default_cache_dir() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("GLIMPSE_FEATURE_CACHE", Path(base) / "glimpse" / "features"))


def target_version(spec: TrainSpec) -> Path:
    """The version folder to write, or TrainingError when the name or version clashes: a
    model already served under this name gets a new version only when asked (--version)."""
    if not MODEL_NAME.fullmatch(spec.model_name):
        raise TrainingError(
            f"model name {spec.model_name!r}: 1-64 letters, digits, '_', '.', '-', starting"
            " with a letter or digit"
        )
    folder = Path(spec.model_base) / spec.model_name
    existing = sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit()) if (
        folder.is_dir()
    ) else []  # fmt: skip
    if spec.version is None:
        if existing:
            raise TrainingError(
                f"model {spec.model_name!r} exists (versions {existing}) under"
                f" {spec.model_base}: pass --version {existing[-1] + 1} to add a version to"
                " it, or choose another --model-name"
            )
        return folder / "1"
    if spec.version in existing:
        raise TrainingError(
            f"{folder / str(spec.version)} exists: versions are immutable; pass --version"
            f" {existing[-1] + 1}"
        )
    return folder / str(spec.version)


def _reader() -> Callable[[str], bytes]:
    storage = None
    lock = threading.Lock()

    def read(uri: str) -> bytes:
        nonlocal storage
        if uri.startswith("gs://"):
            with lock:
                if storage is None:
                    from service.batch.storage import Storage

                    storage = Storage()
            with storage.open_read(uri) as f:
                return f.read()
        return Path(uri).read_bytes()

    return read


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Trainer:
    """One training run; `run()` does everything, reporting progress and honouring cancel."""

    def __init__(
        self,
        spec: TrainSpec,
        on_progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ):
        self.spec = spec
        self.on_progress = on_progress or (lambda stage, done, total: None)
        self.cancel = cancel or threading.Event()
        self.read = _reader()
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="train-read")
        self.bad_images: list[BadImage] = []
        self.seconds: dict[str, float] = {}
        self.cached_photos = 0  # photos whose view features were in the cache
        self.canvas_cached = 0  # photos whose glimpse canvas features were in the cache
        self.view_keys: dict[int, str] = {}  # line -> the photo's content key

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("training cancelled")

    def _load(self, examples: Sequence[Example]) -> list[bytes | None]:
        """Each example's bytes, or None (recorded as a bad image with its line)."""

        def one(example: Example) -> bytes | None:
            try:
                data = self.read(example.uri)
            except FileNotFoundError:
                self.bad_images.append(BadImage(example.line, example.uri, "no such file"))
                return None
            except Exception as e:  # noqa: BLE001  (a storage error is that photo's problem)
                reason = f"unreadable: {type(e).__name__}: {str(e)[:200]}"
                self.bad_images.append(BadImage(example.line, example.uri, reason))
                return None
            if not data:
                self.bad_images.append(BadImage(example.line, example.uri, "empty file"))
                return None
            return data

        return list(self.pool.map(one, examples))

    def _reload(self, examples: Sequence[Example]) -> list[bytes]:
        """Photos read once already: one that has gone since is an error, not a skip (the
        head would be fitted on features of photos the evaluation cannot see)."""
        before = len(self.bad_images)
        images = self._load(examples)
        if len(self.bad_images) > before:
            gone = self.bad_images[before]
            raise TrainingError(
                f"line {gone.line} ({gone.uri}) became unreadable during training: {gone.reason}"
            )
        return [image for image in images if image is not None]

    def run(self) -> TrainReport:
        try:
            return self._run()
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> TrainReport:
        spec = self.spec
        started = time.perf_counter()
        target = target_version(spec)
        report = read_import_file(spec.import_file, seed=spec.seed)
        labels = report.labels
        self.seconds["read import file"] = time.perf_counter() - started

        from model_export.config import SaccaderConfig
        from model_export.training.features import FeatureCache, FeatureExtractor

        k = len(labels)
        cfg = SaccaderConfig(
            variant=spec.backbone,
            default_top_k=min(SaccaderConfig.default_top_k, k),
            max_top_k=min(SaccaderConfig.max_top_k, k),
        )
        model = frozen_model(cfg, k)
        extractor = FeatureExtractor(model)
        cache_root = spec.cache_dir or default_cache_dir()
        view_cache = FeatureCache(cache_root, extractor.identity)

        # 1. View features of every photo (from the cache when this photo was seen before).
        t0 = time.perf_counter()
        if spec.runner == "beam":
            from model_export.training.beam_features import extract_with_beam

            extract_with_beam(report.examples, cache_root, cfg, list(spec.beam_args))
        examples, pooled, cached = self._view_features(report, extractor, view_cache)
        self.cached_photos = cached
        self.seconds["view features"] = time.perf_counter() - t0
        self._check_bad_fraction(report)
        index = {label: i for i, label in enumerate(labels)}
        y = np.array([index[e.label] for e in examples], dtype=np.int64)
        split = np.array([e.split for e in examples])
        self._check_training_photos(labels, y, split)

        from model_export.training import head as head_lib

        def rows(features: np.ndarray, name: str) -> head_lib.Rows:
            return head_lib.Rows(features[split == name], y[split == name])

        # 2. Head A on full views: it picks the glimpses the canvases are cut from.
        t0 = time.perf_counter()
        train_full, val_full = rows(pooled, "training"), rows(pooled, "validation")
        head_a, _, _ = head_lib.choose(train_full, val_full, val_full, k, seed=spec.seed)
        self.seconds["head on views"] = time.perf_counter() - t0

        # 3. Canvas features of training and validation photos, glimpses by head A.
        t0 = time.perf_counter()
        fit_examples = [i for i, s in enumerate(split) if s != "test"]
        canvas_cache = FeatureCache(cache_root, f"{extractor.identity}/canvas")
        canvas = np.zeros_like(pooled)
        self._canvas_features(
            [examples[i] for i in fit_examples], fit_examples, extractor, view_cache,
            canvas_cache, head_a, cfg.default_glimpses, canvas,
        )  # fmt: skip
        self.seconds["canvas features"] = time.perf_counter() - t0

        # 4. Head B on views and canvases; L2 chosen by validation glimpse accuracy.
        t0 = time.perf_counter()
        train = head_lib.Rows.stack(train_full, rows(canvas, "training"))
        head_b, choice, tried = head_lib.choose(
            train, val_full, rows(canvas, "validation"), k, seed=spec.seed
        )
        self.seconds["head on views and glimpses"] = time.perf_counter() - t0
        self._check_cancel()

        # 5. Export aside, evaluate the test split with the exported functions, publish.
        t0 = time.perf_counter()
        model.head.set_weights([head_b.kernel, head_b.bias])
        test = [e for e in examples if e.split == "test"]
        counts = {s: int(np.sum(split == s)) for s in ("training", "validation", "test")}
        test_run = self._test_run(model, test, [index[e.label] for e in test])
        result = evaluation.evaluate(test_run, labels, counts)
        self.seconds["evaluation"] = time.perf_counter() - t0
        extracted = len(examples) - cached
        photos_per_second = extracted / max(self.seconds["view features"], 1e-9)
        training_info = {
            "import_file": spec.import_file,
            "labels": k,
            "splits": counts,
            "split_given": report.split_given,
            "seed": spec.seed,
            "l2_c": choice.c,
            "backbone": f"EfficientNet-{spec.backbone} (ImageNet, frozen)",
        }

        def finish(staging: Path) -> None:
            out = evaluation.write(staging, result, f"{spec.model_name} v{target.name}")
            details = {
                **training_info,
                "tried": [c.__dict__ for c in tried],
                "bad_lines": [b.__dict__ for b in report.bad_lines[:1000]],
                "bad_images": [b.__dict__ for b in self.bad_images[:1000]],
                "duplicates": report.duplicates,
                "seconds": {s: round(v, 2) for s, v in self.seconds.items()},
            }
            (out / "training.json").write_text(json.dumps(details, indent=2) + "\n")

        self._check_cancel()
        t0 = time.perf_counter()
        from model_export.signatures import export

        path = export(
            model,
            Path(spec.model_base),
            int(target.name),
            spec.model_name,
            labels=[("", label) for label in labels],
            info={"labels": {"source": "import file", "count": k}, "training": training_info},
            finish=finish,
        )
        self.seconds["export"] = time.perf_counter() - t0
        self.seconds["total"] = time.perf_counter() - started
        return TrainReport(
            path=path,
            labels=labels,
            counts=counts,
            bad_lines=len(report.bad_lines),
            bad_images=self.bad_images,
            duplicates=report.duplicates,
            split_given=report.split_given,
            chosen_c=choice.c,
            tried=[c.__dict__ for c in tried],
            evaluation=result,
            seconds=self.seconds,
            photos_per_second=photos_per_second,
            cached_photos=cached,
            canvas_cached=self.canvas_cached,
            split_counts={
                label: {s: int(np.sum((y == i) & (split == s))) for s in counts}
                for i, label in enumerate(labels)
            },
        )

    def _check_bad_fraction(self, report: ImportReport) -> None:
        bad = len(report.bad_lines) + len(self.bad_images)
        total = len(report.bad_lines) + len(report.examples)
        if total and bad / total > self.spec.max_bad_fraction:
            shown = [f"line {b.line}: {b.reason}" for b in report.bad_lines[:5]]
            shown += [f"line {b.line} ({b.uri}): {b.reason}" for b in self.bad_images[:5]]
            raise TrainingError(
                f"{bad} of {total} lines are bad or name unreadable photos, above the allowed"
                f" {self.spec.max_bad_fraction:.0%} (--max-bad-fraction): " + "; ".join(shown)
            )

    @staticmethod
    def _check_training_photos(labels: list[str], y: np.ndarray, split: np.ndarray) -> None:
        from model_export.training.import_file import MIN_TRAINING_PHOTOS

        short = [
            f"{label!r} ({int(np.sum((y == i) & (split == 'training')))})"
            for i, label in enumerate(labels)
            if np.sum((y == i) & (split == "training")) < MIN_TRAINING_PHOTOS
        ]
        if short:
            raise TrainingError(
                f"after skipping unreadable photos, labels {', '.join(short)} have fewer than"
                f" {MIN_TRAINING_PHOTOS} training photos"
            )

    def _view_features(self, report: ImportReport, extractor, cache):
        """Readable examples, their mean view features [N, C] and how many came from cache."""
        from model_export.training.features import UnreadableImage

        kept: list[Example] = []
        pooled: list[np.ndarray] = []
        cached = 0
        total = len(report.examples)
        for start, batch in zip(
            range(0, total, BATCH), _batches(report.examples, BATCH), strict=True
        ):
            self._check_cancel()
            images = self._load(batch)
            keys = [None if b is None else cache.key(b) for b in images]
            found = [None if key is None else cache.get(key) for key in keys]
            todo = [i for i, b in enumerate(images) if b is not None and found[i] is None]
            if todo:
                for i, value in zip(todo, extractor.view([images[i] for i in todo]), strict=True):
                    if isinstance(value, UnreadableImage):
                        self.bad_images.append(BadImage(batch[i].line, batch[i].uri, str(value)))
                    else:
                        cache.put(keys[i], value)
                        found[i] = value
            for i, example in enumerate(batch):
                if found[i] is not None:
                    self.view_keys[example.line] = keys[i]
                    kept.append(example)
                    pooled.append(found[i].astype(np.float32).mean(axis=(0, 1)))
                    cached += i not in todo
            self.on_progress("view features", min(start + BATCH, total), total)
        width = pooled[0].shape[0] if pooled else 0
        return kept, np.stack(pooled) if pooled else np.zeros((0, width)), cached

    def _canvas_features(
        self, examples, rows, extractor, view_cache, canvas_cache, head, steps, out
    ) -> None:
        """Canvas features of `examples` into out[rows]: the glimpses come from the cached view
        features; a photo is read and passed through the backbone only when the canvas of
        those very glimpses is not cached (a retrain whose head moves few glimpses is cheap)."""
        total = len(examples)
        for start in range(0, total, BATCH):
            self._check_cancel()
            batch = examples[start : start + BATCH]
            at = rows[start : start + BATCH]
            keys = [self.view_keys[e.line] for e in batch]
            maps = np.stack([view_cache.get(key) for key in keys]).astype(np.float32)
            boxes = extractor.boxes(maps, head, steps)
            canvas_keys = [
                canvas_cache.key(key.encode() + b.astype(np.float32).tobytes())
                for key, b in zip(keys, boxes, strict=True)
            ]
            found = [canvas_cache.get(key) for key in canvas_keys]
            todo = [i for i, f in enumerate(found) if f is None]
            if todo:
                images = self._reload([batch[i] for i in todo])
                values = extractor.canvas(images, boxes[todo])
                for i, value in zip(todo, values, strict=True):
                    canvas_cache.put(canvas_keys[i], value.astype(np.float32))
                    found[i] = value
            self.canvas_cached += len(batch) - len(todo)
            for i, row in enumerate(at):
                out[row] = found[i]
            self.on_progress("glimpse features", min(start + BATCH, total), total)

    def _test_run(self, model, examples: list[Example], true: list[int]) -> evaluation.TestRun:
        import tensorflow as tf

        from model_export.training.answers import test_answers

        cfg = model.cfg
        ts = sorted({1, 2, 4, cfg.default_glimpses})
        fn = test_answers(model, ts)
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(examples), BATCH):
            self._check_cancel()
            images = self._reload(examples[start : start + BATCH])
            out = fn(tf.constant(images))
            for key, value in out.items():
                parts.setdefault(key, []).append(value.numpy())
            self.on_progress("evaluation", min(start + BATCH, len(examples)), len(examples))
        k = model.head.units

        def cat(key: str, shape: tuple[int, ...]) -> np.ndarray:
            return np.concatenate(parts[key]) if key in parts else np.zeros((0, *shape))

        boxes = cat("boxes", (cfg.default_glimpses, 4))[:, : cfg.default_glimpses]
        distinct = np.array([len({tuple(b) for b in row}) for row in boxes])
        return evaluation.TestRun(
            true=np.array(true, dtype=np.int64),
            glimpse_probs={t: cat(f"t{t}", (k,)) for t in ts},
            full_probs=cat("full", (k,)),
            distinct=distinct,
            coverage=cat("coverage", ()),
            default_glimpses=cfg.default_glimpses,
        )


def frozen_model(cfg, num_classes: int):
    """The pretrained backbone (frozen) with a fresh head of `num_classes` outputs."""
    from model_export.backbone import VARIANTS, build_classifier_head, load_pretrained
    from model_export.saccader import Saccader

    backbone, _ = load_pretrained(cfg.variant)
    backbone.trainable = False
    head = build_classifier_head(VARIANTS[cfg.variant].head, num_classes)
    return Saccader(backbone, head, cfg)


def train(
    spec: TrainSpec, on_progress: Progress | None = None, cancel: threading.Event | None = None
) -> TrainReport:
    return Trainer(spec, on_progress, cancel).run()
