"""ROAD's noisy linear imputation (Rong et al., "A Consistent and Efficient Evaluation Strategy
for Attribution Methods", ICML 2022), the faithfulness benchmark's second way to remove cells.

A blur leaves the removed region's outline in the image, and a classifier can read a class from
a shape; imputing every removed pixel from its neighbours leaves no edge to follow. Here and
not in service/explain/faithfulness.py, as bench/stats.py: only the benchmark removes cells this
way (the service's score keeps the one-filter blur), so the gateway does not import a sparse
solver it never uses. `road_remover` plugs into the service's `equal_area_views` as its
`blur_remover` does.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve

from service.explain.faithfulness import Remover

# ROAD's noise: the paper's code adds N(0, 0.01) to images in [0, 1] (it imputes before the
# normalisation, road/road.py's `transform_test`), i.e. 0.01 x 255 on the view's 0..255 scale.
ROAD_NOISE = 0.01 * 255.0
# ROAD's neighbour weights (road/imputations.py): 1/6 for the 4 direct neighbours, 1/12 for the 4
# diagonal ones; they sum to 1, and at the border only the neighbours inside the view count.
_ROAD_NEIGHBOURS = (
    (-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6),
    (0, 1, 1 / 6), (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12),
)  # fmt: skip


def _road_system(
    flat: np.ndarray, removed: np.ndarray
) -> tuple[sparse.csc_matrix, np.ndarray, np.ndarray]:
    """ROAD's linear system over the removed pixels: for each one, (sum of its in-view
    neighbours' weights) x its value - the weighted removed neighbours = the weighted kept
    neighbours. One matrix for every channel: (A [n, n], right-hand sides [n, C], flat indices)."""
    h, w = removed.shape
    index = np.flatnonzero(removed)
    variable = np.full(h * w, -1)
    variable[index] = np.arange(index.size)
    rows, cols = np.divmod(index, w)
    gone = removed.ravel()
    diagonal = np.zeros(index.size)
    rhs = np.zeros((index.size, flat.shape[1]))
    a_rows, a_cols, a_values = [np.arange(index.size)], [np.arange(index.size)], []
    for dy, dx, weight in _ROAD_NEIGHBOURS:
        r, c = rows + dy, cols + dx
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        eq, neighbour = np.flatnonzero(inside), r[inside] * w + c[inside]
        diagonal[eq] += weight
        unknown = gone[neighbour]
        a_rows.append(eq[unknown])
        a_cols.append(variable[neighbour[unknown]])
        a_values.append(np.full(int(unknown.sum()), -weight))
        # Each equation meets a given offset once, so plain fancy-index addition is exact.
        rhs[eq[~unknown]] += weight * flat[neighbour[~unknown]]
    values = np.concatenate([diagonal, *a_values])
    shape = (index.size, index.size)
    matrix = sparse.csc_matrix((values, (np.concatenate(a_rows), np.concatenate(a_cols))), shape)
    return matrix, rhs, index


def road_imputed(
    view: np.ndarray, removed_mask: np.ndarray, rng: np.random.Generator, noise: float = ROAD_NOISE
) -> np.ndarray:
    """ROAD's noisy linear imputation: the `removed_mask` pixels of `view` [H, W, C] replaced by
    the solution of one sparse linear system (each is the weighted mean of its 8 neighbours,
    removed or not; tleemann/road_evaluation's NoisyLinearImputer), plus Gaussian noise of std
    `noise`. The other pixels are returned untouched. The system is symmetric and every removed
    region touches a kept pixel unless all are removed, which has no answer and is refused.
    Values are clipped to the view's 0..255 (the noise can step past them; the paper's [0, 1]
    images are not clipped, and a pixel or two at 256 changes nothing)."""
    removed = np.asarray(removed_mask, bool)
    if not removed.any():
        return view.copy()
    if removed.all():
        raise ValueError("ROAD imputation needs at least one pixel kept")
    channels = view.shape[-1]
    flat = view.reshape(-1, channels).astype(np.float64)
    matrix, rhs, index = _road_system(flat, removed)
    # The minimum-degree ordering of A + A^T suits this symmetric 9-point stencil: 224 x 224
    # with two thirds removed solves in ~0.1 s, about half of the default ordering's time.
    solved = spsolve(matrix, rhs, permc_spec="MMD_AT_PLUS_A").reshape(index.size, channels)
    out = flat.copy()
    out[index] = np.clip(solved + noise * rng.standard_normal(solved.shape), 0.0, 255.0)
    return out.reshape(view.shape).astype(view.dtype, copy=False)


def road_remover(view: np.ndarray, seed: int) -> Remover:
    """Removal by ROAD. Every call draws its noise from a fresh generator with `seed`: the maps
    compared on one view get the same noise (common random numbers), so what differs between
    their scores is where they put the removed cells. A mask already solved is not solved
    again (the glimpses and their attention graph usually pick the same cells)."""
    solved: dict[bytes, np.ndarray] = {}

    def remove(removed: np.ndarray) -> np.ndarray:
        key = np.packbits(removed).tobytes()
        if key not in solved:
            solved[key] = road_imputed(view, removed, np.random.default_rng(seed))
        return solved[key]

    return remove
