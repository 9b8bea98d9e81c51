"""The Saccader cell, the policies and the glimpse-only guarantee."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from model_export.config import POLICIES, VIEW_SIZE, SaccaderConfig
from model_export.saccader import Saccader, saccader_cell
from tests.conftest import encode


def _coverage(boxes: np.ndarray) -> float:
    seen = np.zeros((VIEW_SIZE, VIEW_SIZE), bool)
    for y0, x0, y1, x1 in boxes.astype(int):
        seen[y0:y1, x0:x1] = True
    return seen.mean()


def _photo_batch(rng, n=3) -> tf.Tensor:
    sizes = [(300, 420), (512, 256), (224, 224)]
    return tf.constant(
        [encode(rng.integers(0, 255, (*sizes[i % 3], 3), dtype=np.uint8)) for i in range(n)]
    )


@pytest.mark.parametrize("radius", [0.0, 0.5])
def test_cell_visits_distinct_locations_inside_the_view(radius):
    cfg = SaccaderConfig(variant="tiny", suppression_radius=radius, max_coverage=1.0)
    scores = tf.random.stateless_uniform([2, cfg.grid_points, cfg.grid_points], seed=[1, 2])
    boxes = saccader_cell(scores, 16, cfg).numpy()
    assert boxes.shape == (2, 16, 4)
    assert (boxes >= 0).all() and (boxes <= VIEW_SIZE).all()
    np.testing.assert_array_equal(boxes[..., 2] - boxes[..., 0], cfg.glimpse_size)
    for b in boxes:
        assert len({tuple(x) for x in b}) == 16


def test_cell_takes_the_argmax_first_and_suppresses_its_neighbourhood():
    # Radius 0.25 x 112 px: the neighbour 8 px away is suppressed, the corner 56 px away is not.
    cfg = SaccaderConfig(
        variant="tiny", glimpse_size=112, suppression_radius=0.25, max_coverage=1.0
    )
    n = cfg.grid_points
    scores = np.zeros((1, n, n), np.float32)
    scores[0, 7, 7] = 10.0
    scores[0, 7, 8] = 9.0  # adjacent: suppressed by the memory
    scores[0, 0, 0] = 5.0
    boxes = saccader_cell(tf.constant(scores), 2, cfg).numpy()[0]
    np.testing.assert_array_equal(boxes[0], [56, 56, 168, 168])
    np.testing.assert_array_equal(boxes[1], [0, 0, 112, 112])
    # Without memory (ordered logits) the neighbour comes second.
    no_memory = saccader_cell(tf.constant(scores), 2, cfg, memory=False).numpy()[0]
    np.testing.assert_array_equal(no_memory[1], [56, 64, 168, 176])


@pytest.mark.parametrize("budget", [0.3, 1.0 / 3.0, 0.5])
def test_cell_keeps_the_union_within_the_coverage_budget(budget):
    cfg = SaccaderConfig(variant="tiny", suppression_radius=0.5, max_coverage=budget)
    scores = tf.random.stateless_uniform([4, cfg.grid_points, cfg.grid_points], seed=[3, 4])
    boxes = saccader_cell(scores, 8, cfg).numpy()
    for b in boxes:
        assert _coverage(b) <= budget + 1e-6


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_runs(tiny_model, policy):
    rng = np.random.default_rng(0)
    out = tiny_model.run(_photo_batch(rng), tf.constant([1, 6, 16]), policy=policy)
    assert out["boxes"].shape == (3, 16, 4)
    assert np.isfinite(out["logits"].numpy()).all()


def test_random_policy_is_repeatable_per_photo_and_varies_across_photos(tiny_model):
    rng = np.random.default_rng(1)
    batch = _photo_batch(rng, 2)
    a = tiny_model.run(batch, tf.constant([4, 4]), policy="random")["boxes"].numpy()
    b = tiny_model.run(batch, tf.constant([4, 4]), policy="random")["boxes"].numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[1])


def _noise_outside(hires: np.ndarray, boxes: np.ndarray, valid: np.ndarray, rng) -> np.ndarray:
    """Replace every high-resolution pixel outside the valid glimpses with uniform noise."""
    h = hires.shape[1]
    scale = h / VIEW_SIZE
    out = rng.uniform(0, 255, hires.shape).astype(np.float32)
    for i in range(len(hires)):
        for (y0, x0, y1, x1), ok in zip(boxes[i], valid[i], strict=True):
            if ok:
                sl = np.s_[int(y0 * scale) : int(y1 * scale), int(x0 * scale) : int(x1 * scale)]
                out[i][sl] = hires[i][sl]
    return out


def _assert_glimpse_only(model: Saccader, images: tf.Tensor, steps: list[int]):
    rng = np.random.default_rng(7)
    out = model.run(images, tf.constant(steps))
    hires, boxes, valid = out["hires"].numpy(), out["boxes"], out["valid"]
    noisy = _noise_outside(hires, boxes.numpy(), valid.numpy(), rng)
    assert np.abs(noisy - hires).max() > 100  # the noise really changed the photo
    again = model.what(tf.constant(noisy), boxes, valid)
    np.testing.assert_allclose(again["logits"].numpy(), out["logits"].numpy(), atol=1e-4)
    np.testing.assert_allclose(
        again["glimpse_logits"].numpy(), out["glimpse_logits"].numpy(), atol=1e-4
    )


def test_decision_depends_on_glimpse_pixels_only_tiny(tiny_model):
    _assert_glimpse_only(tiny_model, _photo_batch(np.random.default_rng(2)), [1, 6, 16])


@pytest.mark.slow
def test_decision_depends_on_glimpse_pixels_only_pretrained(lite0_model, sample_photos):
    photos = tf.constant([p.read_bytes() for p in sample_photos[:4]])
    _assert_glimpse_only(lite0_model, photos, [6, 1, 3, 6])
