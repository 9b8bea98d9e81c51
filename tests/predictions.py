"""Comparing predictions that went through different batches.

The same image gives the same glimpses and class whatever batch it lands in, but its scores
move in the 6th-7th digit with batch composition (oneDNN picks kernels by batch size). With
the tiny random model many classes are near-ties, so the order of the top-k list and which
class fills its last slot may flip. These helpers compare structure exactly and floats with a
tolerance, and accept a reordering only between scores that the tolerance cannot tell apart.
"""

from __future__ import annotations

import math
from typing import Any

ATOL = 1e-4  # far above batch noise (~1e-6), far below any real change of answer


def _floats_close(got: Any, want: Any, atol: float, where: str) -> None:
    """Recursive equality; numbers within atol, everything else exactly."""
    if isinstance(want, float) or isinstance(got, float):
        assert math.isclose(got, want, abs_tol=atol), f"{where}: {got} != {want} (atol {atol})"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{where}: keys differ"
        for k in want:
            _floats_close(got[k], want[k], atol, f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: lengths differ"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _floats_close(g, w, atol, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def _assert_ranking_close(got: list[dict], want: list[dict], atol: float, where: str) -> None:
    """Two top-k lists agree up to near-ties: same scores per class, order only within atol."""
    assert len(got) == len(want), f"{where}: lengths differ"
    g_scores = {c["index"]: c["score"] for c in got}
    w_scores = {c["index"]: c["score"] for c in want}
    for g, w in zip(got, want, strict=True):
        assert math.isclose(g["score"], w["score"], abs_tol=atol), f"{where}: rank scores differ"
    floor = min(w_scores.values())
    for index in g_scores.keys() ^ w_scores.keys():
        # A class in one list only must be a near-tie with the last slot of the other.
        score = g_scores.get(index, w_scores.get(index))
        assert math.isclose(score, floor, abs_tol=atol), f"{where}: class {index} differs"
    for index in g_scores.keys() & w_scores.keys():
        assert math.isclose(g_scores[index], w_scores[index], abs_tol=atol), where
    by_index = {c["index"]: c for c in want}
    for c in got:
        if c["index"] in by_index:
            _floats_close(c, by_index[c["index"]], atol, f"{where}[{c['index']}]")


def assert_same_prediction(got: dict, want: dict, atol: float = ATOL, where: str = "") -> None:
    """One prediction against another of the same image made in another batch."""
    ranked = ("top_k", "top_class")
    rest_g = {k: v for k, v in got.items() if k not in ranked}
    rest_w = {k: v for k, v in want.items() if k not in ranked}
    _floats_close(rest_g, rest_w, atol, where or "prediction")
    _assert_ranking_close(got["top_k"], want["top_k"], atol, f"{where}.top_k")
    _assert_ranking_close([got["top_class"]], [want["top_class"]], atol, f"{where}.top_class")


def assert_same_predictions(got: list[dict], want: list[dict], atol: float = ATOL) -> None:
    """Two sets of keyed predictions (e.g. two batch runs) agree record by record."""
    by_key = {r["key"]: r for r in want}
    assert sorted(r["key"] for r in got) == sorted(by_key), "different keys"
    for r in got:
        assert_same_prediction(r, by_key[r["key"]], atol, where=f"key {r['key']}")
