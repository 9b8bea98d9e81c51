"""Deletion and insertion scores (Petsiuk et al., RISE, 2018) for any attribution map.

Pixels of the 224 view are ranked by the map; deletion fills the top-ranked fraction i/n with
grey (127, which the model's normalisation maps to exactly 0: "nothing here") and insertion
starts from an all-grey view and restores it. Each curve is the full-image classifier's
probability for the explained class; the scores are the areas under the curves over [0, 1].
The same classifier and the same fill serve every method, so the scores compare methods on the
user's own image, whichever model the method explains.

Ties (a Grad-CAM plateau, the unattended 2/3 of a glimpse map) are broken in one fixed random
order: a map that does not rank two pixels should not gain or lose by the raster order.
"""

from __future__ import annotations

import numpy as np

from service.explain.methods import FILL, softmax
from service.explain.model import Budget, ExplainModel

_TIE_SEED = 0


def pixel_order(ranking: np.ndarray) -> np.ndarray:
    """Flat pixel indices, most important first; ties in a fixed random order."""
    tie = np.random.default_rng(_TIE_SEED).random(ranking.size)
    return np.lexsort((tie, -ranking.ravel()))


def top_mask(ranking: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean [H, W]: the top `fraction` of pixels by the ranking."""
    count = int(round(fraction * ranking.size))
    mask = np.zeros(ranking.size, bool)
    mask[pixel_order(ranking)[:count]] = True
    return mask.reshape(ranking.shape)


def _curves(view: np.ndarray, ranking: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """[steps+1] deletion and insertion images each, stacked: [2 * (steps+1), H, W, 3]."""
    order = pixel_order(ranking)
    rank = np.empty(ranking.size, np.int64)
    rank[order] = np.arange(ranking.size)
    rank = rank.reshape(ranking.shape)
    blank = np.full_like(view, FILL["grey"])
    counts = np.round(np.linspace(0.0, 1.0, steps + 1) * ranking.size)
    chosen = rank[None] < counts[:, None, None]  # [steps+1, H, W]: top-ranked pixels so far
    deletion = np.where(chosen[..., None], blank[None], view[None])
    insertion = np.where(chosen[..., None], view[None], blank[None])
    return deletion, insertion


def auc(curve: np.ndarray) -> float:
    """Trapezoidal area under a curve sampled evenly over [0, 1]."""
    return float(np.sum((curve[1:] + curve[:-1]) / 2.0) / (len(curve) - 1))


def scores(
    model: ExplainModel,
    view: np.ndarray,
    ranking: np.ndarray,
    class_index: int,
    steps: int,
    budget: Budget,
) -> dict[str, object]:
    """Deletion and insertion curves and AUCs, in one batched classifier run."""
    deletion, insertion = _curves(view, ranking, steps)
    logits = model.logits(np.concatenate([deletion, insertion]), budget)
    probs = softmax(logits.astype(np.float64))[:, class_index]
    d, i = probs[: steps + 1], probs[steps + 1 :]
    return {
        "deletion_auc": auc(d),
        "insertion_auc": auc(i),
        "deletion_curve": [round(float(p), 5) for p in d],
        "insertion_curve": [round(float(p), 5) for p in i],
        "steps": steps,
    }
