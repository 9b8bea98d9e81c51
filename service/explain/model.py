"""The SavedModel's explain signatures, in-process, as numpy functions.

Explanations need gradients, which TF Serving's Predict cannot return for an arbitrary input,
so the gateway keeps a CPU copy of each served version for them (the embedded backend's own
loaded copy, or beside TF Serving a local one) and calls only the `explain` and `explain_*`
signatures exported by model_export/explain_signatures.py. Every call checks the request's
deadline first, so an abandoned explanation stops at its next model call instead of running
to the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_export.contract import (
    EXPLAIN,
    EXPLAIN_CONV,
    EXPLAIN_GLIMPSE_SETS,
    EXPLAIN_GRADIENTS,
    EXPLAIN_GUIDED_GRADIENTS,
    EXPLAIN_LOGITS,
    EXPLAIN_SIGNATURES,
    EXPLAIN_VIEW,
    LABELS_FILE,
    MAX_GLIMPSE_SETS,
)
from service.errors import BackendTimeout, NotReady
from service.savedmodel import warmup_image
from service.scheduler import FairScheduler, Kind

# Rows per call: each call is one turn on the model, so its length is what a prediction
# arriving meanwhile may wait (16 logits rows or glimpse sets: ~0.15-0.2 s of Lite0 on 2
# cores; the cost per row is flat from 8 rows up, so nothing is lost to smaller calls).
_LOGITS_CHUNK = 16
_SETS_CHUNK = min(16, MAX_GLIMPSE_SETS)


@dataclass
class Budget:
    """Deadline and model-call accounting for one explanation."""

    deadline: float = float("inf")
    evaluations: int = 0
    calls: int = 0

    def charge(self, rows: int) -> None:
        if time.monotonic() > self.deadline:
            raise BackendTimeout("the explanation ran past the request deadline")
        self.evaluations += rows
        self.calls += 1


@dataclass
class Labels:
    synsets: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Labels:
        rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
        return cls([r[0] for r in rows], [r[1] if len(r) > 1 else r[0] for r in rows])


class ExplainModel:
    """One loaded SavedModel version's explain signatures. Every call takes a turn from the
    model's scheduler (service/scheduler.py), so explanations and predictions share the model
    fairly, in pieces of at most a few dozen rows; thread-compatible (the explainer uses one
    thread)."""

    def __init__(self, path: Path, loaded: Any, scheduler: FairScheduler):
        import tensorflow as tf

        self._tf = tf
        self.path = path
        missing = [s for s in EXPLAIN_SIGNATURES if s not in loaded.signatures]
        if missing:
            raise NotReady(
                f"model version {path.name} lacks the explain signatures {missing}; re-export"
                " it with this version of `glimpse export`"
            )
        self._loaded = loaded  # keeps the variables alive
        self._fn = {name: loaded.signatures[name] for name in EXPLAIN_SIGNATURES}
        self._scheduler = scheduler
        self.labels = Labels.read(path / "assets" / LABELS_FILE)

    def _run(self, name: str, rows: int, budget: Budget | None, **inputs: Any) -> dict[str, Any]:
        """One signature call in its turn; charged to the request's budget (its deadline
        bounds the wait too)."""
        if budget:
            budget.charge(rows)
        flow = id(budget) if budget else id(self)
        deadline = budget.deadline if budget and budget.deadline != float("inf") else None
        with self._scheduler.turn_blocking(Kind.EXPLAIN, flow, rows, deadline):
            return self._fn[name](**inputs)

    def warm_up(self) -> None:
        """Trace every signature once (seconds each) so that no request pays for it."""
        data = warmup_image().data
        view = self.view(data)["view"]
        boxes = self.glimpses(data, 2)["glimpse_boxes"]
        self.glimpse_sets(data, boxes, np.array([[True, False], [True, True]]))
        self.logits(view[None])
        self.gradients(view[None], 0, guided=False)
        self.gradients(view[None], 0, guided=True)
        self.conv(view[None], 0)

    def _np(self, out: dict[str, Any]) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in out.items()}

    def view(self, image: bytes) -> dict[str, np.ndarray]:
        """The classifier's 224x224 view (float 0..255), crop box and size, for one image."""
        out = self._run(EXPLAIN_VIEW, 1, None, input_image_bytes=self._tf.constant([image]))
        return {k: v[0] for k, v in self._np(out).items()}

    def glimpses(
        self, image: bytes, num_glimpses: int, budget: Budget | None = None
    ) -> dict[str, np.ndarray]:
        out = self._run(
            EXPLAIN,
            1,
            budget,
            input_image_bytes=self._tf.constant([image]),
            num_glimpses=self._tf.constant([num_glimpses], self._tf.int32),
        )
        return {k: v[0] for k, v in self._np(out).items()}

    def glimpse_sets(
        self, image: bytes, boxes: np.ndarray, sets: np.ndarray, budget: Budget | None = None
    ) -> np.ndarray:
        """The model's logits [S, 1000] from each set of glimpses alone: sets [S, T] bool over
        boxes [T, 4] (view pixels). The same function as :predict with `glimpse_boxes`."""
        parts = []
        data = self._tf.constant([image])
        glimpse_boxes = self._tf.constant(np.asarray(boxes, np.float32)[None])
        for i in range(0, len(sets), _SETS_CHUNK):
            chunk = np.asarray(sets[i : i + _SETS_CHUNK], bool)
            out = self._run(
                EXPLAIN_GLIMPSE_SETS,
                len(chunk),
                budget,
                input_image_bytes=data,
                glimpse_boxes=glimpse_boxes,
                glimpse_sets=self._tf.constant(chunk),
            )
            parts.append(out["logits"].numpy())
        return np.concatenate(parts)

    def logits(self, pixels: np.ndarray, budget: Budget | None = None) -> np.ndarray:
        """[N, 224, 224, 3] view pixels -> full-image logits [N, 1000], in bounded chunks."""
        parts = []
        for i in range(0, len(pixels), _LOGITS_CHUNK):
            chunk = np.asarray(pixels[i : i + _LOGITS_CHUNK], np.float32)
            out = self._run(EXPLAIN_LOGITS, len(chunk), budget, pixels=self._tf.constant(chunk))
            parts.append(out["logits"].numpy())
        return np.concatenate(parts)

    def gradients(
        self, pixels: np.ndarray, class_index: int, guided: bool, budget: Budget | None = None
    ) -> dict[str, np.ndarray]:
        """Logits and d logit[class_index] / d pixels, vanilla or guided backprop."""
        out = self._run(
            EXPLAIN_GUIDED_GRADIENTS if guided else EXPLAIN_GRADIENTS,
            len(pixels),
            budget,
            pixels=self._tf.constant(np.asarray(pixels, np.float32)),
            class_index=self._tf.fill([len(pixels)], np.int32(class_index)),
        )
        return self._np(out)

    def conv(
        self, pixels: np.ndarray, class_index: int, budget: Budget | None = None
    ) -> dict[str, np.ndarray]:
        """The last conv layer's values and gradients (Grad-CAM's inputs)."""
        out = self._run(
            EXPLAIN_CONV,
            len(pixels),
            budget,
            pixels=self._tf.constant(np.asarray(pixels, np.float32)),
            class_index=self._tf.fill([len(pixels)], np.int32(class_index)),
        )
        return self._np(out)
