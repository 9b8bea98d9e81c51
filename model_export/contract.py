"""The SavedModel's contract: what `glimpse export` writes and the gateway reads.

Signature names, the image input, the assets and the keys of `model_info.json`, and the view
size live here once, imported by both sides (model_export writes them, service/ reads them),
so a rename cannot leave one side behind. No TensorFlow here: the gateway's adapters and the
fast tests import this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VIEW_SIZE = 224  # the classifier's view; glimpse boxes are given in its pixels

# Serving signatures: the default one's rows are what TF Serving clients get; the gateway's
# labelled path calls `serving_options` (the policy chooses the glimpses) and `serving_boxes`
# (the caller gives them); `classify` is the plain full-image classifier (no glimpses).
SERVING_DEFAULT = "serving_default"
SERVING_OPTIONS = "serving_options"
SERVING_BOXES = "serving_boxes"
CLASSIFY = "classify"
# Explanations: the glimpse re-runs, and the post-hoc methods' logits and gradients.
EXPLAIN = "explain"
EXPLAIN_GLIMPSE_SETS = "explain_glimpse_sets"
EXPLAIN_VIEW = "explain_view"
EXPLAIN_LOGITS = "explain_logits"
EXPLAIN_GRADIENTS = "explain_gradients"
EXPLAIN_GUIDED_GRADIENTS = "explain_guided_gradients"
EXPLAIN_CONV = "explain_conv"
EXPLAIN_SIGNATURES = (
    EXPLAIN,
    EXPLAIN_GLIMPSE_SETS,
    EXPLAIN_VIEW,
    EXPLAIN_LOGITS,
    EXPLAIN_GRADIENTS,
    EXPLAIN_GUIDED_GRADIENTS,
    EXPLAIN_CONV,
)
SIGNATURE_NAMES = frozenset(
    {SERVING_DEFAULT, SERVING_OPTIONS, SERVING_BOXES, CLASSIFY, *EXPLAIN_SIGNATURES}
)

IMAGE_INPUT = "input_image_bytes"  # encoded photos (DT_STRING [batch]) in every signature
GLIMPSE_BOXES = "glimpse_boxes"  # [batch, T, 4]: T counts glimpses
GLIMPSE_SETS = "glimpse_sets"  # [S, T]: T counts glimpses
MAX_GLIMPSE_SETS = 64  # sets per explain_glimpse_sets call: bounds its memory (~100 MB)

# Assets (`<version>/assets/`): the labels (one `id<TAB>name` line per class, in class order:
# the id is ImageNet's synset, empty for a model trained on a user's labels) and what the
# export says about itself. Beside them, `<version>/assets.extra/` (TF Serving's folder for
# files outside the graph) holds a trained version's evaluation.
LABELS_FILE = "labels.tsv"
MODEL_INFO_FILE = "model_info.json"


class ContractError(ValueError):
    """An export that does not keep this contract (the gateway cannot serve it)."""


@dataclass(frozen=True)
class ModelInfo:
    """`model_info.json`: the view, how a photo becomes it, and the limits the gateway checks
    requests against (so a model exported with other limits is served with its own)."""

    view_size: int
    preprocessing: str
    max_glimpses: int
    max_top_k: int

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ModelInfo:
        """From the body model_export/signatures.py `model_info` writes: the limits are
        export settings, under `config`."""
        config = raw["config"]
        return cls(
            view_size=int(raw["view_size"]),
            preprocessing=str(raw.get("preprocessing", "")),
            max_glimpses=int(config["max_glimpses"]),
            max_top_k=int(config["max_top_k"]),
        )

    @classmethod
    def read(cls, saved_model_dir: Path) -> ModelInfo:
        """The export's model info; ContractError naming what is wrong when it cannot be
        served (no file, or another view size than the gateway computes boxes in)."""
        version = Path(saved_model_dir).name
        path = Path(saved_model_dir) / "assets" / MODEL_INFO_FILE
        if not path.exists():
            raise ContractError(
                f"model version {version} has no assets/{MODEL_INFO_FILE}: re-export it with"
                " this version of `glimpse export`"
            )
        try:
            info = cls.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as e:
            raise ContractError(
                f"model version {version}: unreadable {MODEL_INFO_FILE} ({e})"
            ) from None
        if info.view_size != VIEW_SIZE:
            raise ContractError(
                f"model version {version} classifies a {info.view_size}-pixel view; this"
                f" gateway serves {VIEW_SIZE}-pixel views only"
            )
        return info
