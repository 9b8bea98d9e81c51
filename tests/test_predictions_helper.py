"""The tolerance helper used wherever predictions cross batch compositions must still fail."""

from __future__ import annotations

import copy

import pytest

from tests.predictions import assert_same_prediction, assert_same_predictions

pytestmark = pytest.mark.fast


def _prediction(key: str = "a") -> dict:
    top = [
        {"index": 3, "synset": "n3", "label": "c", "score": 0.5},
        {"index": 7, "synset": "n7", "label": "g", "score": 0.25000001},
        {"index": 1, "synset": "n1", "label": "a", "score": 0.25},
    ]
    return {
        "key": key,
        "top_class": top[0],
        "top_k": top,
        "glimpses": [{"order": 1, "box": {"ymin": 0.0, "xmin": 8.0, "ymax": 64.0, "xmax": 72.0}}],
        "coverage": 0.1,
    }


def test_near_ties_may_swap_and_noise_is_tolerated():
    want = _prediction()
    got = copy.deepcopy(want)
    got["top_k"][1], got["top_k"][2] = got["top_k"][2], got["top_k"][1]
    got["coverage"] += 1e-7
    assert_same_prediction(got, want)
    # The last slot may hold another class when it ties with the one it replaced.
    got["top_k"][2] = {"index": 9, "synset": "n9", "label": "i", "score": 0.25000002}
    assert_same_prediction(got, want)
    assert_same_predictions([got], [want])


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p["top_k"].__setitem__(0, {**p["top_k"][0], "score": 0.49}),
        lambda p: p["top_k"].__setitem__(2, {**p["top_k"][2], "index": 9, "score": 0.2}),
        lambda p: p["glimpses"][0]["box"].__setitem__("ymin", 8.0),
        lambda p: p.__setitem__("top_class", dict(p["top_k"][1])),
        lambda p: p.__setitem__("key", "b"),
    ],
)
def test_real_differences_fail(change):
    want = _prediction()
    got = copy.deepcopy(want)
    change(got)
    with pytest.raises(AssertionError):
        assert_same_predictions([got], [want])
