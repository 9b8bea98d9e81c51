"""The Saccader cell, the policies and the glimpse-only guarantee."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from model_export.config import POLICIES, VIEW_SIZE, SaccaderConfig
from model_export.saccader import Saccader, saccader_cell
from service import geometry
from tests.conftest import encode

CFG = SaccaderConfig(variant="tiny")
G = VIEW_SIZE // CFG.grid_stride


def _photo_batch(rng, n=3) -> tf.Tensor:
    sizes = [(300, 420), (512, 256), (224, 224)]
    return tf.constant(
        [encode(rng.integers(0, 255, (*sizes[i % 3], 3), dtype=np.uint8)) for i in range(n)]
    )


def _cell(evidence: np.ndarray, steps: int, cfg: SaccaderConfig = CFG, **kw) -> np.ndarray:
    return saccader_cell(tf.constant(evidence, tf.float32), steps, cfg, **kw).numpy()


def test_first_glimpses_tile_the_focus_region_with_the_most_evidence():
    """Evidence in one 112 x 144 rectangle (cells 5..18 x 8..25): the six glimpses are its 2 x 3
    tiles (48 and 40 px apart), the one holding the most evidence first."""
    evidence = np.zeros((1, G, G), np.float32)
    evidence[0, 5:19, 8:26] = 1.0
    evidence[0, 6:14, 18:26] = 2.0  # the top-right tile holds the most
    boxes = _cell(evidence, 6)[0]
    tiles = {(y, x, y + 64, x + 64) for y in (40, 88) for x in (64, 104, 144)}
    assert {tuple(b) for b in boxes.astype(int)} == tiles
    np.testing.assert_array_equal(boxes[0], [40, 144, 104, 208])
    assert geometry.coverage(boxes) == pytest.approx(112 * 144 / VIEW_SIZE**2)


def test_the_focus_region_turns_when_the_evidence_stands_upright():
    evidence = np.zeros((1, G, G), np.float32)
    evidence[0, 2:20, 10:24] = 1.0  # 144 tall x 112 wide
    boxes = _cell(evidence, 6)[0].astype(int)
    assert {tuple(b[:2]) for b in boxes} == {(y, x) for y in (16, 56, 96) for x in (80, 128)}


@pytest.mark.parametrize("seed", range(4))
def test_every_glimpse_shows_new_pixels(seed):
    """On any evidence: six distinct glimpses within a third of the view, the sequence never
    repeats a box, and the glimpses after the focus region (while the view has room) touch
    what was seen and add at least min_new_fraction new pixels each."""
    from scipy.ndimage import binary_dilation

    rng = np.random.default_rng(seed)
    evidence = rng.random((2, G, G)).astype(np.float32)
    for boxes in _cell(evidence, 16):
        six = [tuple(b) for b in boxes[:6]]
        assert geometry.distinct_count(six) == 6
        assert geometry.coverage(six) <= 1 / 3
        assert np.mean(geometry.new_pixel_fractions(six)[1:]) >= 0.55
        assert len({tuple(b) for b in boxes}) == 16
        assert min(geometry.new_pixel_fractions(boxes[:10])[6:]) >= CFG.min_new_fraction
        for t in range(6, 10):
            near = binary_dilation(geometry.union_mask(boxes[:t]), np.ones((3, 3), bool))
            assert (geometry.box_mask(boxes[t]) & near).any()


def test_fewer_glimpses_are_a_prefix_of_more():
    evidence = np.random.default_rng(5).random((2, G, G)).astype(np.float32)
    full = _cell(evidence, 16)
    for steps in (1, 4, 6, 9):
        np.testing.assert_array_equal(_cell(evidence, steps), full[:, :steps])
    # The loop runs as far as a tensor says (the serving signatures pass the batch's largest T).
    dynamic = saccader_cell(tf.constant(evidence), tf.constant(3), CFG).numpy()
    np.testing.assert_array_equal(dynamic, full[:, :3])


def test_the_focus_fast_path_gives_the_same_boxes_as_every_tier_at_every_step():
    """Random maps, smooth maps, flat maps (ties everywhere) and blobs, upright and turned."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:G, 0:G]
    maps = [rng.random((G, G)), np.zeros((G, G)), np.ones((G, G))]
    maps += [np.exp(-((yy - cy) ** 2 / sy + (xx - cx) ** 2 / sx) / 20.0)
             for cy, cx, sy, sx in rng.uniform([0, 0, 1, 1], [G, G, 8, 8], (9, 4))]  # fmt: skip
    maps += [np.round(rng.random((G, G)) * 3) for _ in range(4)]  # many equal sums
    evidence = np.stack(maps).astype(np.float32)
    for steps in (1, 4, 6, 7, 16):
        np.testing.assert_array_equal(
            _cell(evidence, steps), _cell(evidence, steps, focus_fast_path=False)
        )


def test_without_memory_the_cell_takes_the_best_boxes_in_order():
    """The paper's ordered-logits baseline: positions by evidence alone, overlapping freely."""
    evidence = np.zeros((1, G, G), np.float32)
    evidence[0, 10:12, 10:12] = 1.0
    boxes = _cell(evidence, 3, memory=False)[0]
    assert len({tuple(b) for b in boxes}) == 3
    assert all(geometry.box_mask(b)[80:96, 80:96].all() for b in boxes)


def test_boxes_lie_in_the_view_and_on_the_grid():
    evidence = np.random.default_rng(1).random((3, G, G)).astype(np.float32)
    boxes = _cell(evidence, 16)
    assert (boxes >= 0).all() and (boxes <= VIEW_SIZE).all()
    assert (boxes % CFG.grid_stride == 0).all()
    np.testing.assert_array_equal(boxes[..., 2] - boxes[..., 0], CFG.glimpse_size)


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
    """Replace every high-resolution pixel whose centre lies outside the valid glimpses with
    uniform noise (the model counts a pixel as seen by its centre)."""
    h = hires.shape[1]
    centres = (np.arange(h) + 0.5) * VIEW_SIZE / h
    out = rng.uniform(0, 255, hires.shape).astype(np.float32)
    for i in range(len(hires)):
        for (y0, x0, y1, x1), ok in zip(boxes[i], valid[i], strict=True):
            if ok:
                rows = (centres >= y0) & (centres < y1)
                cols = (centres >= x0) & (centres < x1)
                inside = rows[:, None] & cols[None, :]
                out[i][inside] = hires[i][inside]
    return out


def _assert_glimpse_only(model: Saccader, images: tf.Tensor, steps: list[int], boxes=None):
    rng = np.random.default_rng(7)
    out = model.run(images, tf.constant(steps), boxes=boxes)
    hires, boxes, valid = out["hires"].numpy(), out["boxes"], out["valid"]
    noisy = _noise_outside(hires, boxes.numpy(), valid.numpy(), rng)
    assert np.abs(noisy - hires).max() > 100  # the noise really changed the photo
    again = model.what(tf.constant(noisy), boxes, valid)
    np.testing.assert_allclose(again["logits"].numpy(), out["logits"].numpy(), atol=1e-4)


def test_decision_depends_on_glimpse_pixels_only_tiny(tiny_model):
    _assert_glimpse_only(tiny_model, _photo_batch(np.random.default_rng(2)), [1, 6, 16])


def test_a_cheaper_variant_keeps_the_guarantee_and_its_map_shrinks(tiny_model):
    """`--where-size 128 --canvas-size 160` (the cost frontier's option): the where pass sees
    a 128-px view (a 4x4 map), the decision still comes from the glimpse pixels only."""
    from dataclasses import replace

    cfg = replace(tiny_model.cfg, where_size=128, canvas_size=160)
    cheap = Saccader(tiny_model.backbone, tiny_model.head, cfg)
    view = tf.zeros([1, VIEW_SIZE, VIEW_SIZE, 3])
    assert cheap.where(view).shape[1:3] == (4, 4)
    assert tiny_model.where(view).shape[1:3] == (7, 7)
    images = _photo_batch(np.random.default_rng(3), 2)
    _assert_glimpse_only(cheap, images, [6, 16])
    assert cheap.run(images, tf.constant([6, 6]))["canvas"].shape[1:3] == (160, 160)


@pytest.mark.parametrize(
    "setting",
    [{"where_size": 100}, {"where_size": 256}, {"canvas_size": 48}, {"annotated_format": "gif"}],
)
def test_export_settings_are_checked(setting):
    with pytest.raises(ValueError, match=next(iter(setting))):
        SaccaderConfig(**setting)


def test_given_boxes_with_fractional_edges_see_only_their_pixels(tiny_model):
    """A user's boxes need not lie on the grid; the guarantee holds to the pixel."""
    boxes = tf.constant(
        [[[10.5, 20.25, 60.75, 99.5], [60.75, 99.5, 61.75, 140.0], [150.0, 3.0, 224.0, 40.5]]] * 2
    )
    images = _photo_batch(np.random.default_rng(4), 2)
    _assert_glimpse_only(tiny_model, images, [3, 2], boxes=boxes)


def test_a_set_of_glimpses_is_classified_alike_wherever_it_comes_from(tiny_model):
    """what() on a photo shared by several rows (explain_glimpse_sets) equals what() on a
    photo per row: one function gives every glimpse-set score."""
    images = _photo_batch(np.random.default_rng(6), 1)
    out = tiny_model.run(images, tf.constant([6]), steps=6)
    sets = tf.constant([[True, False, True, False, False, False], [True] * 6])
    boxes = tf.repeat(out["boxes"], 2, axis=0)
    shared = tiny_model.what(out["hires"], boxes, sets, tf.zeros([2], tf.int32))["logits"]
    copied = tiny_model.what(tf.repeat(out["hires"], 2, axis=0), boxes, sets)["logits"]
    np.testing.assert_allclose(shared.numpy(), copied.numpy(), atol=1e-5)
    np.testing.assert_allclose(shared.numpy()[1], out["logits"].numpy()[0], atol=1e-5)


@pytest.mark.slow
def test_decision_depends_on_glimpse_pixels_only_pretrained(lite0_model, sample_photos):
    photos = tf.constant([p.read_bytes() for p in sample_photos[:4]])
    _assert_glimpse_only(lite0_model, photos, [6, 1, 3, 6])
