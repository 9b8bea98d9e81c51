"""Explanations of real photos with the pretrained model: the numbers mean something here."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import skimage

from tests.conftest import body
from tests.rerun import as_list, assert_at_least, assert_probability, rerun
from tests.servers import live_server

CATS = {281, 282, 283, 285, 287}
EXPLAIN = "/v1/models/saccader:explain"


@pytest.fixture(scope="module")
def pretrained(lite0_export, gateway_settings):
    with live_server(gateway_settings(model_dir=lite0_export.parent.parent)) as server:
        yield server


def explain(server, image: bytes, **params) -> dict:
    r = httpx.post(server.url + EXPLAIN, json=body(image, **params), timeout=300)
    assert r.status_code == 200, r.text[:300]
    return r.json()["explanations"][0]["attributions_by_label"][0]


@pytest.mark.slow
def test_cat_explanations_are_faithful(pretrained):
    cat = (Path(skimage.__file__).parent / "data" / "chelsea.png").read_bytes()
    glimpses = explain(pretrained, cat)
    ig = explain(
        pretrained,
        cat,
        method="integrated_gradients",
        steps=200,
        label_index=glimpses["label_index"],
    )
    assert glimpses["label_index"] in CATS and ig["label_index"] in CATS
    # With 200 steps integrated gradients satisfies completeness within a few percent.
    assert ig["approx_error"] < 0.05
    f = glimpses["faithfulness"]
    assert f["full_probability"] > 0.3  # the unmodified photo: a confident cat
    # The glimpses alone (the rest blurred) still show a cat (which cat is a near-tie for this
    # photo: every method's top cells flip tiger cat to Egyptian cat); blurring them loses over
    # half of the class's probability.
    assert f["sufficiency_class"] in CATS and f["necessity_drop"] > 0.5 * f["full_probability"]


@pytest.mark.slow
@pytest.mark.parametrize("index", [0, 250, 499])
def test_glimpse_numbers_survive_a_rerun_on_real_photos(pretrained, sample_photos, index):
    """On real photos, through the public API: each glimpse's probability is :predict on that
    box alone (<= 1e-3), and every minimal sufficient set SAG reports keeps at least its
    threshold of the full confidence when re-run on its glimpses alone."""
    photo = sample_photos[index % len(sample_photos)].read_bytes()
    e = explain(pretrained, photo, method="sag", faithfulness=False)
    k, boxes = e["label_index"], [as_list(g["box"]) for g in e["glimpses"]]
    for box, g in zip(boxes, e["glimpses"], strict=True):
        assert_probability(rerun(pretrained, photo, [box]), k, g["probability"])
    graph = e["sag"]
    assert graph["search"] == "exact" and graph["minimal_sufficient_sets"]
    bar = graph["threshold"] * graph["full_confidence"]
    for found in graph["minimal_sufficient_sets"]:
        assert_at_least(rerun(pretrained, photo, [boxes[i - 1] for i in found]), k, bar)
