"""Re-running the model on given glimpses through the public API, to check reported numbers."""

from __future__ import annotations

import httpx

from tests.conftest import b64

PREDICT = "/v1/models/saccader:predict"
TOP = 20  # the most classes :predict lists


def as_list(box: dict) -> list[float]:
    return [box[k] for k in ("ymin", "xmin", "ymax", "xmax")]


def rerun(server, image: bytes, boxes: list[list[float]]) -> dict:
    """:predict with these glimpse_boxes: the model's answer from exactly their pixels."""
    payload = {
        "instances": [{"input_image_bytes": {"b64": b64(image)}}],
        "parameters": {"glimpse_boxes": boxes, "top_k": TOP, "annotated_image": False},
    }
    r = httpx.post(server.url + PREDICT, json=payload, timeout=120)
    assert r.status_code == 200, r.text[:300]
    return r.json()["predictions"][0]


def assert_probability(prediction: dict, k: int, expected: float, tol: float = 1e-3) -> None:
    """Class k's probability in a re-run equals `expected`; when k is not among the listed top
    classes, all the re-run can say is that it is at most the last one listed."""
    scores = {c["index"]: c["score"] for c in prediction["top_k"]}
    if k in scores:
        assert abs(scores[k] - expected) <= tol, (k, scores[k], expected)
    else:
        assert expected <= min(scores.values()) + tol, (k, expected, min(scores.values()))


def assert_at_least(prediction: dict, k: int, bound: float, tol: float = 1e-3) -> None:
    scores = {c["index"]: c["score"] for c in prediction["top_k"]}
    assert k in scores and scores[k] >= bound - tol, (k, scores.get(k), bound)
