"""Glimpse boxes as pixel sets of the 224 view, counted by pixel centre as the model counts them.

Shared by the responses (each glimpse's new pixels), the explanations (rankings, coverage) and
the benchmarks, so that every number about a box means the same pixels everywhere.
"""

from __future__ import annotations

import numpy as np

from model_export.contract import VIEW_SIZE

_CENTRES = np.arange(VIEW_SIZE) + 0.5


def box_mask(box) -> np.ndarray:
    """[224, 224] bool: the view pixels whose centres lie in [ymin, ymax) x [xmin, xmax)."""
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    rows = (_CENTRES >= ymin) & (_CENTRES < ymax)
    cols = (_CENTRES >= xmin) & (_CENTRES < xmax)
    return rows[:, None] & cols[None, :]


def union_mask(boxes) -> np.ndarray:
    seen = np.zeros((VIEW_SIZE, VIEW_SIZE), bool)
    for box in boxes:
        seen |= box_mask(box)
    return seen


def coverage(boxes) -> float:
    """Fraction of the view inside any glimpse."""
    return float(union_mask(boxes).mean())


def new_pixel_fractions(boxes) -> list[float]:
    """For each glimpse, the fraction of its pixels that no earlier glimpse covered."""
    seen = np.zeros((VIEW_SIZE, VIEW_SIZE), bool)
    fractions = []
    for box in boxes:
        inside = box_mask(box)
        count = int(inside.sum())
        fractions.append(float((inside & ~seen).sum() / count) if count else 0.0)
        seen |= inside
    return fractions


def iou(a, b) -> float:
    """Intersection over union of two boxes, as areas (not pixel counts)."""
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, y1 - y0) * max(0.0, x1 - x0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def distinct_count(boxes, threshold: float = 0.3) -> int:
    """Glimpses whose IoU with every earlier glimpse is below `threshold` (the first counts)."""
    return sum(all(iou(b, e) < threshold for e in boxes[:i]) for i, b in enumerate(boxes))


def max_earlier_iou(boxes) -> list[float]:
    """For each glimpse after the first, its largest IoU with an earlier one."""
    return [max(iou(b, e) for e in boxes[:i]) for i, b in enumerate(boxes) if i]
