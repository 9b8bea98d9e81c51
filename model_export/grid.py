"""The 8-px grid of candidate glimpse positions, shared by policies and the Saccader cell.

Every glimpse box starts on the grid and spans whole cells, so coverage and box sums are
exact on a G x G map (G = 224 / stride) instead of the 224 x 224 pixel view.
"""

from __future__ import annotations

import tensorflow as tf

from model_export.config import VIEW_SIZE, SaccaderConfig


def cells(cfg: SaccaderConfig) -> int:
    return VIEW_SIZE // cfg.grid_stride


def box_sums(grid: tf.Tensor, cfg: SaccaderConfig) -> tf.Tensor:
    """Sum of a [B, G, G] cell map over every candidate box -> [B, n, n], via an integral image."""
    k, n = cfg.glimpse_size // cfg.grid_stride, cfg.grid_points
    integral = tf.pad(tf.cumsum(tf.cumsum(grid, axis=1), axis=2), [[0, 0], [1, 0], [1, 0]])
    return (
        integral[:, k : k + n, k : k + n]
        - integral[:, 0:n, k : k + n]
        - integral[:, k : k + n, 0:n]
        + integral[:, 0:n, 0:n]
    )


def box_mean(grid: tf.Tensor, cfg: SaccaderConfig) -> tf.Tensor:
    k = cfg.glimpse_size // cfg.grid_stride
    return box_sums(grid, cfg) / float(k * k)


def pool_to_cells(maps: tf.Tensor, cfg: SaccaderConfig) -> tf.Tensor:
    """[B, 224, 224] pixel map -> [B, G, G] mean per cell."""
    s = cfg.grid_stride
    return tf.nn.avg_pool2d(maps[..., None], s, s, "VALID")[..., 0]


def upsample_cells(grid: tf.Tensor, size: int) -> tf.Tensor:
    """[B, G, G] -> [B, size, size] by repetition; size must be a multiple of G."""
    factor = size // grid.shape[1]
    return tf.repeat(tf.repeat(grid, factor, axis=1), factor, axis=2)
