"""The exported SavedModel: serving signatures, in-graph preprocessing, labels as assets.

The SavedModel is the contract between model_export and the service: everything a client
needs (class names, crop box to map glimpses back to the photo, the annotated picture) comes
out of the signatures, so TF Serving alone is a complete backend.

Signatures (all inputs and outputs are batch-first, as TF Serving's row format requires):
- serving_default(input_image_bytes): defaults of the config (6 glimpses, top 5).
- serving_options(input_image_bytes, num_glimpses, top_k): the same with per-instance options;
  glimpse and top-k outputs are padded to the batch maximum (boxes -1, class -1, score 0).
- serving_boxes(input_image_bytes, glimpse_boxes, num_glimpses, top_k): the decision from the
  caller's boxes [B, G, 4] (view pixels; the first num_glimpses of each row) instead of the
  policy's: "what does the model see from here only?". Same outputs.
- explain(input_image_bytes, num_glimpses): glimpses, logits and the where path's evidence map.
- explain_glimpse_sets(input_image_bytes, glimpse_boxes, glimpse_sets): for one image, the
  logits from each set of its glimpses [S, T] (single glimpses, subsets for attention graphs),
  the same function as serving_boxes, batched over the sets.
- classify(input_image_bytes): plain full-image classification, the cost baseline.
- explain_*: logits and gradients for post-hoc explanations (model_export/explain_signatures.py).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf

from model_export import annotate as annotate_lib
from model_export import explain_signatures, preprocessing
from model_export.config import RESIZE_SHORTER, SaccaderConfig
from model_export.contract import (
    CLASSIFY,
    EXPLAIN,
    EXPLAIN_GLIMPSE_SETS,
    GLIMPSE_BOXES,
    IMAGE_INPUT,
    LABELS_FILE,
    MAX_GLIMPSE_SETS,
    MODEL_INFO_FILE,
    SERVING_BOXES,
    SERVING_DEFAULT,
    SERVING_OPTIONS,
    SIGNATURE_NAMES,
    VIEW_SIZE,
)
from model_export.labels import write_label_rows, write_labels
from model_export.saccader import Saccader, seen_pixels

EXPORTER_REVISION = 3
BYTES = tf.TensorSpec([None], tf.string, name=IMAGE_INPUT)
BOXES = tf.TensorSpec([None, None, 4], tf.float32, name=GLIMPSE_BOXES)


def _table(asset: tf.saved_model.Asset, column: int) -> tf.lookup.StaticHashTable:
    init = tf.lookup.TextFileInitializer(
        asset,
        key_dtype=tf.int64,
        key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
        value_dtype=tf.string,
        value_index=column,
        delimiter="\t",
    )
    return tf.lookup.StaticHashTable(init, default_value="")


class ExportModule(tf.Module):
    def __init__(self, model: Saccader, labels_path: Path, info_path: Path):
        super().__init__(name="glimpse")
        self.model = model
        self.labels = tf.saved_model.Asset(str(labels_path))
        self.info = tf.saved_model.Asset(str(info_path))  # tracked, so it is copied along
        self.synset_table = _table(self.labels, 0)
        self.name_table = _table(self.labels, 1)
        cfg = model.cfg
        self.config = {  # exported as constants so clients can read the model's limits
            "default_glimpses": tf.constant(cfg.default_glimpses),
            "max_glimpses": tf.constant(cfg.max_glimpses),
            "default_top_k": tf.constant(cfg.default_top_k),
            "max_top_k": tf.constant(cfg.max_top_k),
            "glimpse_size": tf.constant(cfg.glimpse_size),
        }

    def _names(self, classes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        ids = tf.cast(classes, tf.int64)
        return self.name_table.lookup(ids), self.synset_table.lookup(ids)

    def _check(self, image_bytes, name: str, values: tf.Tensor, low: int, high: int) -> list:
        n = tf.shape(image_bytes)[0]
        return [
            tf.debugging.assert_equal(
                tf.shape(values)[0], n, message=f"{name} must have one value per instance"
            ),
            tf.debugging.assert_greater_equal(values, low, message=f"{name} must be >= {low}"),
            tf.debugging.assert_less_equal(values, high, message=f"{name} must be <= {high}"),
        ]

    def _check_boxes(self, image_bytes, boxes, num_glimpses) -> list:
        """Valid boxes lie in the view and are at least a pixel tall and wide."""
        valid = tf.range(tf.shape(boxes)[1])[None, :] < num_glimpses[:, None]
        b = tf.boolean_mask(boxes, valid)
        return [
            tf.debugging.assert_equal(
                tf.shape(boxes)[0], tf.shape(image_bytes)[0],
                message="glimpse_boxes must have one row per instance",
            ),
            tf.debugging.assert_less_equal(
                num_glimpses, tf.shape(boxes)[1],
                message="num_glimpses must not exceed the boxes given",
            ),
            tf.debugging.assert_greater_equal(b, 0.0, message="boxes must lie in the view"),
            tf.debugging.assert_less_equal(
                b, float(VIEW_SIZE), message="boxes must lie in the view"
            ),
            tf.debugging.assert_greater_equal(
                b[:, 2:] - b[:, :2], 1.0, message="boxes must be at least 1 pixel tall and wide"
            ),
        ]  # fmt: skip

    def _predict(self, image_bytes, num_glimpses, top_k, boxes=None) -> dict[str, tf.Tensor]:
        cfg = self.model.cfg
        checks = self._check(image_bytes, "num_glimpses", num_glimpses, 1, cfg.max_glimpses)
        checks += self._check(image_bytes, "top_k", top_k, 1, cfg.max_top_k)
        if boxes is not None:
            checks += self._check_boxes(image_bytes, boxes, num_glimpses)
        with tf.control_dependencies(checks):
            steps = tf.reduce_max(num_glimpses)
        r = self.model.run(image_bytes, num_glimpses, steps=steps, boxes=boxes)
        probs = tf.nn.softmax(r["logits"])
        # Top-k, padded to the largest k in the batch.
        k_max = tf.reduce_max(top_k)
        top = tf.math.top_k(probs, k=k_max)
        keep_k = tf.range(k_max)[None, :] < top_k[:, None]
        classes = tf.where(keep_k, top.indices, -1)
        scores = tf.where(keep_k, top.values, 0.0)
        names, synsets = self._names(tf.maximum(classes, 0))
        names = tf.where(keep_k, names, "")
        synsets = tf.where(keep_k, synsets, "")
        # Glimpses, in visiting order, padded to the largest T in the batch.
        boxes = r["boxes"][:, :steps]
        valid = r["valid"][:, :steps]
        seen = seen_pixels(boxes, valid)
        full_probs = tf.nn.softmax(r["full_logits"])
        full_class = tf.argmax(full_probs, axis=1, output_type=tf.int32)
        full_name, full_synset = self._names(full_class)
        return {
            "classes": classes,
            "scores": scores,
            "class_names": names,
            "synsets": synsets,
            "glimpse_boxes": tf.where(valid[..., None], boxes, -1.0),
            "num_glimpses": tf.identity(num_glimpses),
            "coverage": tf.reduce_mean(tf.cast(seen, tf.float32), axis=[1, 2]),
            "full_image_class": full_class,
            "full_image_score": tf.reduce_max(full_probs, axis=1),
            "full_image_name": full_name,
            "full_image_synset": full_synset,
            "crop_box": r["crop_box"],
            "image_size": r["image_size"],
            "annotated_image_bytes": annotate_lib.annotate(
                r["view"], boxes, valid, seen, cfg.annotated_format
            ),
        }

    @tf.function(input_signature=[BYTES])
    def serving_default(self, input_image_bytes):
        n = tf.shape(input_image_bytes)[0]
        cfg = self.model.cfg
        return self._predict(
            input_image_bytes,
            tf.fill([n], cfg.default_glimpses),
            tf.fill([n], cfg.default_top_k),
        )

    @tf.function(
        input_signature=[
            BYTES,
            tf.TensorSpec([None], tf.int32, name="num_glimpses"),
            tf.TensorSpec([None], tf.int32, name="top_k"),
        ]
    )
    def serving_options(self, input_image_bytes, num_glimpses, top_k):
        return self._predict(input_image_bytes, num_glimpses, top_k)

    @tf.function(
        input_signature=[
            BYTES,
            BOXES,
            tf.TensorSpec([None], tf.int32, name="num_glimpses"),
            tf.TensorSpec([None], tf.int32, name="top_k"),
        ]
    )
    def serving_boxes(self, input_image_bytes, glimpse_boxes, num_glimpses, top_k):
        return self._predict(input_image_bytes, num_glimpses, top_k, boxes=glimpse_boxes)

    @tf.function(input_signature=[BYTES, tf.TensorSpec([None], tf.int32, name="num_glimpses")])
    def explain(self, input_image_bytes, num_glimpses):
        cfg = self.model.cfg
        checks = self._check(input_image_bytes, "num_glimpses", num_glimpses, 1, cfg.max_glimpses)
        with tf.control_dependencies(checks):
            steps = tf.reduce_max(num_glimpses)
        r = self.model.run(input_image_bytes, num_glimpses, steps=steps)
        valid = r["valid"][:, :steps]
        return {
            "glimpse_boxes": tf.where(valid[..., None], r["boxes"][:, :steps], -1.0),
            "logits": r["logits"],
            "full_logits": r["full_logits"],
            # The where path's evidence per 8-px cell: what the policy ranked the view by.
            "evidence": r["evidence"],
            "location_logits": r["location_logits"],
            "crop_box": r["crop_box"],
            # The view the glimpses are drawn on, so the intrinsic explanation is one call.
            "view": r["view"],
            "image_size": r["image_size"],
        }

    @tf.function(
        input_signature=[
            tf.TensorSpec([1], tf.string, name=IMAGE_INPUT),
            BOXES,
            tf.TensorSpec([None, None], tf.bool, name="glimpse_sets"),
        ]
    )
    def explain_glimpse_sets(self, input_image_bytes, glimpse_boxes, glimpse_sets):
        sets = tf.shape(glimpse_sets)[0]
        checks = self._check_boxes(
            input_image_bytes, glimpse_boxes, tf.shape(glimpse_boxes)[1:2]
        ) + [
            tf.debugging.assert_less_equal(
                sets, MAX_GLIMPSE_SETS, message=f"at most {MAX_GLIMPSE_SETS} sets per call"
            ),
            tf.debugging.assert_equal(
                tf.shape(glimpse_sets)[1], tf.shape(glimpse_boxes)[1],
                message="glimpse_sets must have one column per glimpse",
            ),
            tf.debugging.assert_equal(
                tf.reduce_all(tf.reduce_any(glimpse_sets, axis=1)), True,
                message="every glimpse set must hold a glimpse",
            ),
        ]  # fmt: skip
        with tf.control_dependencies(checks):
            v = preprocessing.batch_views(input_image_bytes, self.model.cfg.hires_size)
        boxes = tf.repeat(glimpse_boxes, sets, axis=0)
        same_photo = tf.zeros([sets], tf.int32)
        return {"logits": self.model.what(v["hires"], boxes, glimpse_sets, same_photo)["logits"]}

    @tf.function(input_signature=[BYTES])
    def classify(self, input_image_bytes):
        v = preprocessing.batch_views(input_image_bytes, None)
        logits = tf.reduce_mean(self.model.where(v["view"]), axis=[1, 2])
        probs = tf.nn.softmax(logits)
        top = tf.math.top_k(probs, k=self.model.cfg.default_top_k)
        names, synsets = self._names(top.indices)
        return {
            "classes": top.indices,
            "scores": top.values,
            "class_names": names,
            "synsets": synsets,
        }


def model_info(cfg: SaccaderConfig) -> dict:
    """What the export is, for the service and for tools: the view, how a photo becomes it,
    and every setting (the gateway validates requests against `max_glimpses` and `max_top_k`)."""
    return {
        "view_size": VIEW_SIZE,
        # Bumped when the graph changes what it draws or answers without a setting changing
        # (2: the annotated image's union outline and numbered glimpses; 3: the where pass's
        # size and the picture's format are settings), so `glimpse export
        # --if-missing` (make serve) re-exports an older version instead of serving it.
        "exporter_revision": EXPORTER_REVISION,
        "preprocessing": (
            f"shorter side resized to {RESIZE_SHORTER} (bicubic), central {VIEW_SIZE}x{VIEW_SIZE}"
            " crop"
        ),
        "config": dataclasses.asdict(cfg),
    }


def read_model_info(saved_model_dir: Path) -> dict | None:
    """The export's model_info.json; None for an export made before it existed."""
    path = Path(saved_model_dir) / "assets" / MODEL_INFO_FILE
    return json.loads(path.read_text()) if path.exists() else None


def signature_names(saved_model_dir: Path) -> set[str]:
    """The signatures an existing export carries (to spot one made by an older exporter)."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    return {k for k in sm.meta_graphs[0].signature_def if not k.startswith("__")}


def stale_reason(saved_model_dir: Path, cfg: SaccaderConfig) -> str | None:
    """Why an existing export is not what this exporter would write for `cfg` (None: it is).

    An export from another version of the exporter would serve without (or with stale)
    signatures, or with another cell, and nothing else would notice.
    """
    found = signature_names(saved_model_dir)
    changes = [f"lacks {sorted(SIGNATURE_NAMES - found)}"] if SIGNATURE_NAMES - found else []
    changes += [f"has old {sorted(found - SIGNATURE_NAMES)}"] if found - SIGNATURE_NAMES else []
    if read_model_info(saved_model_dir) != json.loads(json.dumps(model_info(cfg))):
        changes.append("was made with other settings")
    return " and ".join(changes) or None


def export(
    model: Saccader,
    model_dir: Path,
    version: int = 1,
    name: str = "saccader",
    labels: list[tuple[str, str]] | None = None,
    info: dict | None = None,
    finish: Callable[[Path], None] | None = None,
) -> Path:
    """Write `<model_dir>/<name>/<version>/` as TF Serving expects; returns that directory.

    labels: (id, name) per class in class order (default: ImageNet's synsets and names; a
    head trained on a user's classes passes ("", label) rows: no invented synset). info: more
    keys for model_info.json (what the head was trained on). finish: writes more files into
    the version (an evaluation) before it is published. The version is written aside and
    renamed into place, so TF Serving and the gateway's poller never see a half-written one.
    """
    target = Path(model_dir) / name / str(version)
    if target.exists():
        raise FileExistsError(f"{target} exists; pick another version or remove it")
    staging = target.with_name(f".{version}.partial")
    staging.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)  # left over from an interrupted export
    try:
        with tempfile.TemporaryDirectory() as tmp:
            info_path = Path(tmp) / MODEL_INFO_FILE
            info_path.write_text(
                json.dumps({**model_info(model.cfg), **(info or {})}, indent=2) + "\n"
            )
            labels_path = Path(tmp) / LABELS_FILE
            if labels is None:
                write_labels(labels_path)
            else:
                write_label_rows(labels_path, labels)
            module = ExportModule(model, labels_path, info_path)
            signatures = {
                SERVING_DEFAULT: module.serving_default,
                SERVING_OPTIONS: module.serving_options,
                SERVING_BOXES: module.serving_boxes,
                EXPLAIN: module.explain,
                EXPLAIN_GLIMPSE_SETS: module.explain_glimpse_sets,
                CLASSIFY: module.classify,
                **explain_signatures.attach(module, model),  # post-hoc gradients, explain_*.py
            }
            tf.saved_model.save(module, str(staging), signatures=signatures)
        if finish is not None:
            finish(staging)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def build(cfg: SaccaderConfig) -> Saccader:
    from model_export.backbone import load_pretrained

    backbone, head = load_pretrained(cfg.variant)
    return Saccader(backbone, head, cfg)
