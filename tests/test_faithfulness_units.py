"""The faithfulness benchmark's parts that need no model: ROAD's imputation and the bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from bench import road, stats
from service.explain import faithfulness

pytestmark = pytest.mark.fast

SIZE = 224


def _cells(fraction: float, seed: int = 0) -> np.ndarray:
    """A [224, 224] mask of random 8x8 cells, as the equal-area metric removes them."""
    cells = np.random.default_rng(seed).random((SIZE // 8, SIZE // 8)) < fraction
    return np.repeat(np.repeat(cells, 8, 0), 8, 1)


def _photo_like(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((SIZE, SIZE, 3)) * 255).astype(np.float32)


# -- ROAD ----------------------------------------------------------------------------------


def test_road_keeps_a_constant_image_constant():
    view = np.full((SIZE, SIZE, 3), 93.0, np.float32)
    out = road.road_imputed(view, _cells(0.6), np.random.default_rng(0), noise=0.0)
    np.testing.assert_allclose(out, view, atol=1e-3)


def test_road_reproduces_a_linear_ramp_without_noise():
    y, x = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    ramp = np.stack([0.5 * x + 0.3 * y + 10, 200 - 0.7 * y, 0.2 * x + 40], axis=-1)
    # Away from the border: there only the in-view neighbours count, lopsidedly, as in the
    # paper's code, and a ramp's value at the edge is then pulled inwards.
    removed = np.zeros((SIZE, SIZE), bool)
    removed[8:-8, 8:-8] = _cells(0.7)[8:-8, 8:-8]
    removed[40:180, 60:200] = True  # and one large region, solved as a whole
    out = road.road_imputed(ramp, removed, np.random.default_rng(0), noise=0.0)
    np.testing.assert_allclose(out, ramp, atol=1e-6)


def test_road_solves_every_removed_pixel_as_its_neighbours_weighted_mean():
    view, removed = _photo_like(), _cells(0.5, seed=3)
    out = road.road_imputed(view.astype(np.float64), removed, np.random.default_rng(0), noise=0.0)
    padded = np.pad(out, ((1, 1), (1, 1), (0, 0)))
    inside = np.pad(np.ones((SIZE, SIZE)), 1)
    total, weights = np.zeros_like(out), np.zeros((SIZE, SIZE, 1))
    for dy, dx, w in road._ROAD_NEIGHBOURS:
        window = (slice(1 + dy, 1 + dy + SIZE), slice(1 + dx, 1 + dx + SIZE))
        total += w * padded[window]
        weights += w * inside[window][..., None]
    np.testing.assert_allclose(out[removed], (total / weights)[removed], atol=1e-6)


def test_road_leaves_the_kept_pixels_alone_and_adds_its_noise():
    view, removed = _photo_like(), _cells(0.4)
    out = road.road_imputed(view, removed, np.random.default_rng(1))
    np.testing.assert_array_equal(out[~removed], view[~removed])
    quiet = road.road_imputed(view, removed, np.random.default_rng(1), noise=0.0)
    noise = (out - quiet)[removed]
    assert out.dtype == view.dtype and 0 <= out.min() and out.max() <= 255
    # The paper's 0.01 of the [0, 1] range (less a little where clipping at 0 or 255 bites).
    assert road.ROAD_NOISE == pytest.approx(2.55)
    assert noise.std() == pytest.approx(road.ROAD_NOISE, rel=0.05)


def test_road_remover_gives_every_map_the_same_noise():
    view = _photo_like()
    remove = road.road_remover(view, seed=7)
    first, second = _cells(0.3, seed=1), _cells(0.3, seed=2)
    remove(first)  # an earlier map's removal does not move the next one's noise
    again = road.road_imputed(view, second, np.random.default_rng(7))
    np.testing.assert_array_equal(remove(second), again)
    assert remove(first) is remove(first.copy())  # the same cells are solved once


def test_road_refuses_to_remove_everything_and_copies_when_nothing_is_removed():
    view = _photo_like()
    with pytest.raises(ValueError, match="one pixel kept"):
        road.road_imputed(view, np.ones((SIZE, SIZE), bool), np.random.default_rng(0))
    same = road.road_imputed(view, np.zeros((SIZE, SIZE), bool), np.random.default_rng(0))
    np.testing.assert_array_equal(same, view)


def test_equal_area_views_keep_or_remove_the_top_cells():
    view = _photo_like()
    ranking = np.zeros((SIZE, SIZE))
    ranking[:64, :64] = 1.0
    blur = faithfulness.blurred(view)
    images, area = faithfulness.equal_area_views(
        ranking, 64 * 64 / SIZE**2, faithfulness.blur_remover(view)
    )
    top = ranking > 0
    assert area == pytest.approx(top.mean())
    np.testing.assert_array_equal(images[0][top], view[top])  # sufficiency: the rest blurred
    np.testing.assert_array_equal(images[0][~top], blur[~top])
    np.testing.assert_array_equal(images[1][top], blur[top])  # necessity: the top blurred
    np.testing.assert_array_equal(images[1][~top], view[~top])


def test_equal_area_scores_judge_the_full_views_class():
    logits = np.zeros((3, 4))
    logits[0, 2] = logits[1, 2] = 5.0  # sufficiency keeps class 2
    logits[2, 1] = 5.0  # necessity moves to class 1
    s = faithfulness.equal_area_scores(logits, 2)
    assert s["sufficiency_keeps_prediction"] and s["necessity_changes_prediction"]
    assert s["full_class"] == 2 and s["necessity_class"] == 1
    assert s["necessity_drop"] == pytest.approx(s["full_probability"] - 1 / (3 + np.e**5))


# -- the bootstrap -------------------------------------------------------------------------


def test_bootstrap_interval_brackets_the_mean_and_is_seeded():
    values = np.random.default_rng(0).random(200) < 0.5
    a, b = stats.bootstrap(values), stats.bootstrap(values)
    assert a == b
    assert a.low < a.value < a.high and a.value == pytest.approx(values.mean())
    # A proportion near 0.5 over 200 photos: +-1.96 sqrt(0.25 / 200) = +-0.069.
    assert a.high - a.low == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 200), rel=0.15)


def test_bootstrap_of_identical_photos_has_no_width():
    interval = stats.bootstrap(np.full(50, 0.3))
    assert interval.low == pytest.approx(0.3) and interval.high == pytest.approx(0.3)


def test_bootstrap_takes_any_statistic_of_the_photos():
    curves = np.random.default_rng(0).random((30, 11))
    median_area = stats.bootstrap(curves, lambda c: float(np.median(c, axis=0).mean()))
    assert median_area.value == pytest.approx(np.median(curves, axis=0).mean())
    assert median_area.low < median_area.value < median_area.high
    with pytest.raises(ValueError, match="one value per photo"):
        stats.bootstrap(curves)


def test_paired_difference_is_narrower_than_either_method_alone():
    rng = np.random.default_rng(0)
    hard = rng.random(200)  # how hard each photo is: both methods feel it
    a, b = hard + 0.05 + rng.normal(0, 0.02, 200), hard
    diff = stats.paired(a, b)
    assert diff.value == pytest.approx(a.mean() - b.mean())
    assert diff.low > 0  # a is better on these photos, and the paired interval can tell
    alone = stats.bootstrap(a)
    assert diff.high - diff.low < (alone.high - alone.low) / 5
    with pytest.raises(ValueError, match="same photos"):
        stats.paired(a, b[:10])


def test_one_draw_of_photos_serves_every_figure():
    indices = stats.resample_indices(40, resamples=100, seed=3)
    assert indices.shape == (100, 40) and indices.max() < 40
    values = np.arange(40.0)
    assert stats.bootstrap(values, indices=indices) == stats.bootstrap(values, indices=indices)
    assert stats.Interval(0.5, 0.25, 0.75).scaled(100).as_dict() == {
        "value": 50.0,
        "low": 25.0,
        "high": 75.0,
    }
    assert stats.Interval(0.1, 0.05, 0.2).scaled(-1) == stats.Interval(-0.1, -0.2, -0.05)
    with pytest.raises(ValueError, match="at least one photo"):
        stats.resample_indices(0)


# -- the benchmark's bookkeeping (bench/faithfulness.py, imported without TensorFlow) ---------


def test_run_order_puts_a_spread_of_the_photos_first():
    from bench.faithfulness import run_order

    order = run_order(200, 16, 64)
    assert sorted(order) == list(range(200))
    for first in (16, 64):
        head = sorted(order[:first])
        assert max(np.diff(head)) <= 200 // first + 1  # evenly spread, not the first synsets
    assert set(order[:16]) <= set(order[:64])


def test_ranks_share_ties_and_follow_the_direction():
    from bench.faithfulness import ranks

    assert ranks({"a": 1.0, "b": 1.0, "c": 0.5, "d": 2.0}, True) == {"a": 2, "b": 2, "c": 4, "d": 1}
    assert ranks({"a": 1.0, "c": 0.5}, False) == {"a": 2, "c": 1}


def _fake_record(rng: np.random.Generator, rows: list[str], label: int = 3) -> dict:
    """A photo's record as bench.faithfulness keeps it, with the glimpses made better."""

    def scores(good: bool) -> dict:
        keeps = good or bool(rng.random() < 0.4)
        return {"full_class": label, "full_probability": 0.9, "sufficiency_probability":
                rng.random(), "sufficiency_class": label if keeps else 0,
                "sufficiency_keeps_prediction": keeps, "necessity_drop": rng.random(),
                "necessity_class": 0 if good else label,
                "necessity_changes_prediction": good}  # fmt: skip

    def per_row() -> dict:
        return {m: scores(m in ("glimpses", "sag")) for m in rows}

    judged = {j: {r: per_row() for r in ("blur", "road")} for j in ("lite0", "lite2")}
    pixel = {m: {"deletion": rng.random(), "insertion": rng.random()} for m in rows}
    return {"label": label, "area": 0.32, "seconds": {m: rng.random() for m in rows},
            "judged": judged, "pixel": pixel}  # fmt: skip


def test_summaries_rank_the_glimpses_and_pair_their_gaps():
    from bench import faithfulness as bench

    rng = np.random.default_rng(0)
    rows = bench.SETS["all_methods"]
    records = [_fake_record(rng, rows) for _ in range(40)]
    summary = bench.summarise_set(records, rows, bench.equal_area_columns(), resamples=200)
    column = summary["lite2_road_necessity_top1_drop"]
    assert column["ranks"]["glimpses"] == column["ranks"]["sag"] == 1
    assert column["best_other"] not in ("glimpses", "sag", bench.RANDOM)
    gap = column["glimpses_minus_best_other"]
    assert gap.value == pytest.approx(1.0) and gap.low > 0
    ranks = bench.glimpse_ranks({"all_methods": summary})["all_methods"]
    assert ranks["lite0_blur_sufficiency_agreement"] == 1 and len(ranks) == 4 * 5


def test_the_report_renders_every_table():
    from bench import faithfulness as bench

    rng = np.random.default_rng(1)
    records = [_fake_record(rng, bench.SETS["all_methods"]) for _ in range(6)]
    sets = {"all_methods": records[:3], "fast_methods": records}
    summaries = {
        n: bench.summarise_set(sets[n], rows, bench.equal_area_columns(), 50)
        for n, rows in bench.SETS.items()
    }
    summaries["all_methods"] |= bench.summarise_set(
        sets["all_methods"], bench.SETS["all_methods"], bench.PIXEL_COLUMNS, 50
    )
    seconds = {n: bench.seconds_figures(sets[n], rows, 50) for n, rows in bench.SETS.items()}
    top1 = {n: bench.judge_top1(sets[n], 50) for n in bench.SETS}
    top1["fast_methods"]["lite2_reference"] = stats.bootstrap(np.ones(6))
    run = {"photos": 6, "slow_photos": 3, "pic_tried": 0, "pic_used": 0, "minutes": 1.0,
           "minutes_before_pic": 1.0, "resamples": 50}  # fmt: skip
    checks = bench.target_checks(summaries["all_methods"])
    md = bench.render(summaries, seconds, top1, stats.bootstrap(np.full(6, 0.32)), run, checks)
    assert md.count("### Judge") == 8 and "Lite2 (independent), ROAD" in md
    assert "(#1)" in md and " [" in md and "pixel deletion AUC" in md
    json_ready = bench.as_json(summaries["fast_methods"])
    assert set(json_ready["lite0_blur_sufficiency_agreement"]["figures"]["glimpses"]) == {
        "value",
        "low",
        "high",
    }


def test_pic_blur_triangulating_once_gives_saliencys_numbers():
    from saliency.metrics import pic

    from bench.faithfulness import pic_blurred_image

    rng = np.random.default_rng(0)
    img = (rng.random((48, 40, 3)) * 255).astype(np.uint8)
    for kept in (0.01, 0.3, 0.9):
        mask = rng.random((48, 40)) < kept
        np.testing.assert_array_equal(
            pic_blurred_image(img, mask), pic.create_blurred_image(img, mask)
        )
    everything = np.ones((48, 40), bool)
    np.testing.assert_array_equal(pic_blurred_image(img, everything), img)
