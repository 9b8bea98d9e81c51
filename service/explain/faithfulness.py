"""How faithful an attribution map is, measured with the full-image classifier.

The metric every explanation gets (`equal_area`), fair to maps of any shape:
- rank the 8x8-pixel cells of the 224 view by the map's mean over each cell (the model's
  grid, on which glimpse boxes lie), ties in one fixed random order;
- take the top cells covering a given fraction of the view (by default as much as the
  glimpses cover, so every method is judged at the glimpses' own budget);
- *sufficiency*: keep only those cells, blur the rest, classify: does the full-image
  prediction survive, and with what probability for the explained class;
- *necessity*: blur those cells instead (the Saccader paper's Figure 5b, region-wise): how
  much of the class probability is lost, and does the prediction change.
Cells, not pixels, and a blur rather than a constant: removing a third of the pixels scattered
one by one destroys any photo whatever their place, so a pixel metric rewards scattered maps;
a blurred region keeps the photo's colours and layout but none of its detail (the whole view
blurred this way is classified correctly for 0.4% of the dev photos).

A blur still leaves the removed region's outline in the image, and a classifier can read a
class from a shape (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
Methods", ICML 2022: ROAD). So the benchmark also removes cells ROAD's way (bench/road.py,
through the same `Remover` seam as `blur_remover`): every removed pixel becomes the weighted
mean of its 8 neighbours, all of them solved at once, plus a little noise, which leaves no edge
to follow. The service's own score keeps the blur (one Gaussian filter; a ROAD solve costs
~0.1 s per removal).

The pixel-level deletion/insertion curves (Petsiuk et al., RISE, 2018) stay available on
request (`pixel_curves`), labelled as what they are.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.ndimage import gaussian_filter

from service.explain.methods import FILL, softmax
from service.explain.model import Budget, ExplainModel

CELL = 8
BLUR_SIGMA = 16.0  # pixels of the 224 view
_TIE_SEED = 0
# Pixels [H, W] bool to take out of one view -> that view with them removed.
Remover = Callable[[np.ndarray], np.ndarray]


def blurred(view: np.ndarray) -> np.ndarray:
    """The view with no detail left: a Gaussian blur of BLUR_SIGMA pixels per channel."""
    return gaussian_filter(view, (BLUR_SIGMA, BLUR_SIGMA, 0), mode="nearest")


def blur_remover(view: np.ndarray) -> Remover:
    """Removal by the blur: the view blurred once, pasted wherever pixels are removed."""
    blur = blurred(view)
    return lambda removed: np.where(removed[..., None], blur, view)


def pixel_order(ranking: np.ndarray) -> np.ndarray:
    """Flat indices, most important first; ties in a fixed random order."""
    tie = np.random.default_rng(_TIE_SEED).random(ranking.size)
    return np.lexsort((tie, -ranking.ravel()))


def top_mask(ranking: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of ranking's shape: its top `fraction` of entries."""
    count = int(round(fraction * ranking.size))
    mask = np.zeros(ranking.size, bool)
    mask[pixel_order(ranking)[:count]] = True
    return mask.reshape(ranking.shape)


def top_cells(ranking: np.ndarray, fraction: float) -> np.ndarray:
    """[H, W] pixel mask of the top-ranked CELL x CELL cells (by mean) covering `fraction`."""
    n = ranking.shape[0] // CELL
    cells = ranking.reshape(n, CELL, n, CELL).mean(axis=(1, 3))
    return np.repeat(np.repeat(top_mask(cells, fraction), CELL, 0), CELL, 1)


def equal_area_views(
    ranking: np.ndarray, fraction: float, remove: Remover
) -> tuple[np.ndarray, float]:
    """The two images the equal-area metric classifies, [2, H, W, C]: sufficiency (everything
    but the top cells removed) then necessity (the top cells removed); and the area kept."""
    keep = top_cells(ranking, fraction)
    return np.stack([remove(~keep), remove(keep)]), float(keep.mean())


def equal_area_scores(logits: np.ndarray, class_index: int) -> dict[str, object]:
    """The equal-area scores from one judge's logits [3, K] on the full view, the sufficiency
    image and the necessity image, for `class_index` (the class the scores are about)."""
    logits = np.asarray(logits, np.float64)
    probs = softmax(logits)[:, class_index]
    predicted = np.argmax(logits, axis=1)
    return {
        "full_probability": float(probs[0]),
        "sufficiency_probability": float(probs[1]),
        "full_class": int(predicted[0]),
        "sufficiency_class": int(predicted[1]),
        "sufficiency_keeps_prediction": bool(predicted[1] == predicted[0]),
        "necessity_drop": float(probs[0] - probs[2]),
        "necessity_class": int(predicted[2]),
        "necessity_changes_prediction": bool(predicted[2] != predicted[0]),
    }


def equal_area(
    model: ExplainModel,
    view: np.ndarray,
    ranking: np.ndarray,
    class_index: int,
    fraction: float,
    budget: Budget,
    full_logits: np.ndarray | None = None,
) -> dict[str, object]:
    """Sufficiency and necessity of the top cells covering `fraction` of the view: 2 runs, or 3
    when the full-image logits of the view are not given."""
    images, area = equal_area_views(ranking, fraction, blur_remover(view))
    if full_logits is None:
        images = np.concatenate([view[None], images])
    logits = model.logits(images, budget).astype(np.float64)
    if full_logits is not None:
        logits = np.concatenate([np.asarray(full_logits, np.float64)[None], logits])
    return {"area": area} | equal_area_scores(logits, class_index)


def auc(curve: np.ndarray) -> float:
    """Trapezoidal area under a curve sampled evenly over [0, 1]."""
    return float(np.sum((curve[1:] + curve[:-1]) / 2.0) / (len(curve) - 1))


def pixel_curves(
    model: ExplainModel,
    view: np.ndarray,
    ranking: np.ndarray,
    class_index: int,
    steps: int,
    budget: Budget,
) -> dict[str, object]:
    """Pixel deletion and insertion (RISE): the top-ranked fraction i/steps of the pixels is
    greyed out (127, the model's zero input) or restored onto a grey view; curves of the class
    probability and their areas, in one batched run of 2 x (steps + 1) images."""
    order = pixel_order(ranking)
    rank = np.empty(ranking.size, np.int64)
    rank[order] = np.arange(ranking.size)
    rank = rank.reshape(ranking.shape)
    blank = np.full_like(view, FILL["grey"])
    counts = np.round(np.linspace(0.0, 1.0, steps + 1) * ranking.size)
    chosen = (rank[None] < counts[:, None, None])[..., None]  # top-ranked pixels so far
    deletion = np.where(chosen, blank[None], view[None])
    insertion = np.where(chosen, view[None], blank[None])
    logits = model.logits(np.concatenate([deletion, insertion]), budget)
    probs = softmax(logits.astype(np.float64))[:, class_index]
    d, i = probs[: steps + 1], probs[steps + 1 :]
    return {
        "pixel_deletion_auc": auc(d),
        "pixel_insertion_auc": auc(i),
        "pixel_deletion_curve": [round(float(p), 5) for p in d],
        "pixel_insertion_curve": [round(float(p), 5) for p in i],
        "steps": steps,
    }
