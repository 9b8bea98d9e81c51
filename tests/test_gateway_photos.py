"""Real photos through the real service with the pretrained model."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import skimage

from tests.conftest import body
from tests.servers import live_server

CATS = {281, 282, 283, 285, 287}
CUPS = {504, 967, 968}  # coffee mug, espresso, cup


@pytest.mark.slow
def test_cat_and_coffee(lite0_export, gateway_settings):
    data = Path(skimage.__file__).parent / "data"
    cat, coffee = (data / "chelsea.png").read_bytes(), (data / "coffee.png").read_bytes()
    with live_server(gateway_settings(model_dir=lite0_export.parent.parent)) as server:
        url = server.url + "/v1/models/saccader:predict"
        r = httpx.post(url, json=body(cat, coffee), timeout=120)
    assert r.status_code == 200, r.text
    cat_p, cup_p = r.json()["predictions"]
    assert cat_p["top_class"]["index"] in CATS and cat_p["full_image"]["index"] in CATS
    assert cup_p["top_class"]["index"] in CUPS and cup_p["full_image"]["index"] in CUPS
    for p in (cat_p, cup_p):
        assert len(p["glimpses"]) == 6 and p["coverage"] <= 1 / 3 + 1e-6
        assert p["top_class"]["score"] > 0.3
