"""The exported SavedModel: serving signatures, in-graph preprocessing, labels as assets.

The SavedModel is the contract between model_export and the service: everything a client
needs (class names, crop box to map glimpses back to the photo, the annotated picture) comes
out of the signatures, so TF Serving alone is a complete backend.

Signatures (all inputs and outputs are batch-first, as TF Serving's row format requires):
- serving_default(input_image_bytes): defaults of the config (6 glimpses, top 5).
- serving_options(input_image_bytes, num_glimpses, top_k): the same with per-instance options;
  glimpse and top-k outputs are padded to the batch maximum (boxes -1, class -1, score 0).
- explain(input_image_bytes, num_glimpses): per-glimpse logits and the location score map.
- classify(input_image_bytes): plain full-image classification, the cost baseline.
- explain_*: logits and gradients for post-hoc explanations (model_export/explain_signatures.py).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from model_export import annotate as annotate_lib
from model_export import explain_signatures, preprocessing
from model_export.config import VIEW_SIZE, SaccaderConfig
from model_export.grid import upsample_cells
from model_export.labels import write_labels
from model_export.saccader import Saccader, union_cells

BYTES = tf.TensorSpec([None], tf.string, name="input_image_bytes")
INTS = tf.TensorSpec([None], tf.int32)


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
    def __init__(self, model: Saccader, labels_path: Path):
        super().__init__(name="glimpse")
        self.model = model
        self.labels = tf.saved_model.Asset(str(labels_path))
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

    def _predict(self, image_bytes, num_glimpses, top_k) -> dict[str, tf.Tensor]:
        cfg = self.model.cfg
        checks = self._check(image_bytes, "num_glimpses", num_glimpses, 1, cfg.max_glimpses)
        checks += self._check(image_bytes, "top_k", top_k, 1, cfg.max_top_k)
        with tf.control_dependencies(checks):
            steps = tf.reduce_max(num_glimpses)
        r = self.model.run(image_bytes, num_glimpses)
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
        glimpse_probs = tf.nn.softmax(r["glimpse_logits"][:, :steps])
        predicted = top.indices[:, 0]
        glimpse_scores = tf.gather(glimpse_probs, predicted, axis=2, batch_dims=1)
        glimpse_scores = tf.where(valid, glimpse_scores, 0.0)
        seen_cells = union_cells(boxes, valid, cfg)
        seen = upsample_cells(seen_cells, VIEW_SIZE)
        full_probs = tf.nn.softmax(r["full_logits"])
        full_class = tf.argmax(full_probs, axis=1, output_type=tf.int32)
        full_name, full_synset = self._names(full_class)
        return {
            "classes": classes,
            "scores": scores,
            "class_names": names,
            "synsets": synsets,
            "glimpse_boxes": tf.where(valid[..., None], boxes, -1.0),
            "glimpse_scores": glimpse_scores,
            "num_glimpses": tf.identity(num_glimpses),
            "coverage": tf.reduce_mean(tf.cast(seen_cells, tf.float32), axis=[1, 2]),
            "full_image_class": full_class,
            "full_image_score": tf.reduce_max(full_probs, axis=1),
            "full_image_name": full_name,
            "full_image_synset": full_synset,
            "crop_box": r["crop_box"],
            "image_size": r["image_size"],
            "annotated_image_bytes": annotate_lib.annotate(r["view"], boxes, valid, seen),
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

    @tf.function(input_signature=[BYTES, tf.TensorSpec([None], tf.int32, name="num_glimpses")])
    def explain(self, input_image_bytes, num_glimpses):
        cfg = self.model.cfg
        checks = self._check(input_image_bytes, "num_glimpses", num_glimpses, 1, cfg.max_glimpses)
        with tf.control_dependencies(checks):
            steps = tf.reduce_max(num_glimpses)
        r = self.model.run(input_image_bytes, num_glimpses)
        valid = r["valid"][:, :steps]
        return {
            "glimpse_logits": tf.where(valid[..., None], r["glimpse_logits"][:, :steps], 0.0),
            "glimpse_boxes": tf.where(valid[..., None], r["boxes"][:, :steps], -1.0),
            "logits": r["logits"],
            "full_logits": r["full_logits"],
            "location_scores": r["scores"],
            "location_logits": r["location_logits"],
            "crop_box": r["crop_box"],
            # The view the glimpses are drawn on, so the intrinsic explanation is one call.
            "view": r["view"],
            "image_size": r["image_size"],
        }

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


SIGNATURE_NAMES = frozenset(
    {"serving_default", "serving_options", "explain", "classify", *explain_signatures.NAMES}
)


def signature_names(saved_model_dir: Path) -> set[str]:
    """The signatures an existing export carries (to spot one made by an older exporter)."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    return {k for k in sm.meta_graphs[0].signature_def if not k.startswith("__")}


def export(model: Saccader, model_dir: Path, version: int = 1, name: str = "saccader") -> Path:
    """Write `<model_dir>/<name>/<version>/` as TF Serving expects; returns that directory."""
    target = Path(model_dir) / name / str(version)
    if target.exists():
        raise FileExistsError(f"{target} exists; pick another version or remove it")
    staging = target.with_name(f".{version}.partial")
    staging.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)  # left over from an interrupted export
    with tempfile.TemporaryDirectory() as tmp:
        module = ExportModule(model, write_labels(Path(tmp) / "labels.tsv"))
        signatures = {
            "serving_default": module.serving_default,
            "serving_options": module.serving_options,
            "explain": module.explain,
            "classify": module.classify,
            **explain_signatures.attach(module, model),  # post-hoc gradients, explain_*.py
        }
        tf.saved_model.save(module, str(staging), signatures=signatures)
    staging.rename(target)  # TF Serving must never see a half-written version
    return target


def build(cfg: SaccaderConfig) -> Saccader:
    from model_export.backbone import load_pretrained

    backbone, head = load_pretrained(cfg.variant)
    return Saccader(backbone, head, cfg)
