"""The 8-px grid on which glimpse positions lie, shared by policies and the Saccader cell.

Evidence maps live on a G x G grid of cells (G = 224 / stride). Every box the cell chooses
starts on the grid and spans whole cells, so window sums over a cell map (one integral image)
score every candidate position at once.
"""

from __future__ import annotations

import tensorflow as tf

from model_export.config import VIEW_SIZE, SaccaderConfig


def cells(cfg: SaccaderConfig) -> int:
    return VIEW_SIZE // cfg.grid_stride


def window_sums(grid: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Sum of a [B, G, G] cell map over every height x width window (in cells) that fits:
    [B, G - height + 1, G - width + 1], indexed by the window's top-left cell."""
    g = grid.shape[1]
    h, w = g - height + 1, g - width + 1
    integral = tf.pad(tf.cumsum(tf.cumsum(grid, axis=1), axis=2), [[0, 0], [1, 0], [1, 0]])
    return (
        integral[:, height : height + h, width : width + w]
        - integral[:, 0:h, width : width + w]
        - integral[:, height : height + h, 0:w]
        + integral[:, 0:h, 0:w]
    )


def box_sums(grid: tf.Tensor, cfg: SaccaderConfig) -> tf.Tensor:
    """Sum of a [B, G, G] cell map over every candidate glimpse box -> [B, n, n]."""
    k = cfg.glimpse_size // cfg.grid_stride
    return window_sums(grid, k, k)


def pool_to_cells(maps: tf.Tensor, cfg: SaccaderConfig) -> tf.Tensor:
    """[B, 224, 224] pixel map -> [B, G, G] mean per cell."""
    s = cfg.grid_stride
    return tf.nn.avg_pool2d(maps[..., None], s, s, "VALID")[..., 0]
