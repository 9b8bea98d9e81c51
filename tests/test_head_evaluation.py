"""The head fit and the evaluation on synthetic features: no TensorFlow, no photos."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from model_export.training import evaluation
from model_export.training.head import Rows, choose, fit, top1

pytestmark = pytest.mark.fast


def _rows(n_per_class: list[int], width: int = 32, seed: int = 0, noise: float = 1.0) -> Rows:
    """Non-negative features (like ReLU6 outputs) with one informative direction per class."""
    rng = np.random.default_rng(seed)
    features, labels = [], []
    for k, n in enumerate(n_per_class):
        x = np.abs(rng.normal(0.0, noise, (n, width)))
        x[:, k] += 3.0
        features.append(x)
        labels.append(np.full(n, k))
    return Rows(np.concatenate(features).astype(np.float32), np.concatenate(labels))


def test_the_head_is_a_plain_dense_layer_on_raw_features():
    train = _rows([30, 30, 30])
    head = fit(train, 3, c=1.0)
    assert head.kernel.shape == (32, 3) and head.bias.shape == (3,)
    assert head.kernel.dtype == np.float32
    assert top1(head, _rows([20, 20, 20], seed=1)) > 0.95


def test_two_classes_give_two_logits_whose_softmax_is_the_regression():
    head = fit(_rows([25, 25]), 2, c=1.0)
    logits = head.logits(_rows([10, 10], seed=2).features)
    assert logits.shape == (20, 2)
    assert np.allclose(logits.sum(axis=1), logits.sum(axis=1).mean(), atol=1e-3)  # +-d/2


def test_the_fit_is_deterministic():
    train = _rows([20, 40, 10])
    a, b = fit(train, 3, c=0.3), fit(train, 3, c=0.3)
    assert np.array_equal(a.kernel, b.kernel) and np.array_equal(a.bias, b.bias)


def test_class_balance_keeps_a_rare_class():
    """200 photos of one class and 8 of another, overlapping: the balanced head recalls the
    rare class far better than the same regression without class weights."""
    from sklearn.linear_model import LogisticRegression

    train = _rows([200, 8], noise=2.0)
    held = _rows([200, 50], seed=3, noise=2.0)
    rare = held.labels == 1
    balanced = np.argmax(fit(train, 2, c=0.1).logits(held.features[rare]), axis=1)
    plain = LogisticRegression(C=0.1, max_iter=500).fit(train.features, train.labels)
    assert np.mean(balanced == 1) > np.mean(plain.predict(held.features[rare]) == 1) + 0.2


def test_a_class_without_training_rows_never_wins():
    train = _rows([20, 20, 0])
    head = fit(train, 3, c=1.0)
    assert (np.argmax(head.logits(_rows([5, 5, 5], seed=4).features), axis=1) != 2).all()


def test_regularisation_is_chosen_on_validation_glimpses_then_full():
    train = _rows([30, 30, 30])
    val = _rows([10, 10, 10], seed=5)
    head, choice, tried = choose(train, val, val, 3)
    assert [t.c for t in tried] == sorted(t.c for t in tried)
    best = max(tried, key=lambda t: (t.glimpse_top1, t.full_top1, t.c))
    assert choice == best and head.kernel.shape == (32, 3)
    _, middle, _ = choose(train, Rows(np.zeros((0, 32)), np.zeros(0, int)), val, 3)
    assert middle.c == tried[len(tried) // 2].c  # no validation rows: the grid's middle


def _run(true: list[int], predicted: list[int], k: int = 3) -> evaluation.TestRun:
    n = len(true)
    probs = np.full((n, k), 0.1 / (k - 1))
    probs[np.arange(n), predicted] = 0.9
    return evaluation.TestRun(
        true=np.array(true),
        glimpse_probs={1: probs, 2: probs, 4: probs, 6: probs},
        full_probs=probs,
        distinct=np.full(n, 6),
        coverage=np.full(n, 0.32),
        default_glimpses=6,
    )


def test_the_evaluation_is_vertex_shaped_with_per_label_metrics(tmp_path):
    labels = ["ant", "bee", "wasp"]
    body = evaluation.evaluate(
        _run([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]), labels, {"training": 30, "test": 6}
    )
    cm = body["metrics"]["confusionMatrix"]
    assert cm["rows"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert [s["displayName"] for s in cm["annotationSpecs"]] == labels
    per = {r["displayName"]: r for r in body["metadata"]["perLabel"]}
    assert per["bee"]["precision"] == pytest.approx(2 / 3, abs=1e-4) and per["bee"]["recall"] == 1
    assert per["wasp"]["recall"] == 0.5
    assert body["metadata"]["glimpseTop1"]["6"] == pytest.approx(4 / 6)
    assert body["metadata"]["glimpseOverFull"] == 1.0
    at_half = next(
        m for m in body["metrics"]["confidenceMetrics"] if m["confidenceThreshold"] == 0.5
    )
    assert at_half["precisionAt1"] == pytest.approx(4 / 6, abs=1e-5)
    assert 0 < body["metrics"]["auPrc"] <= 1 and body["metrics"]["logLoss"] > 0
    assert body["metricsSchemaUri"].endswith("classification_metrics_1.0.0.yaml")

    out = evaluation.write(tmp_path, body, "insects v1")
    assert json.loads((out / evaluation.EVALUATION_JSON).read_text()) == body
    assert evaluation.read(tmp_path) == body
    md = (out / evaluation.EVALUATION_MD).read_text()
    assert "| wasp | 2 | 100.0% | 50.0% |" in md and "| glimpses, T=6 | 66.7% |" in md
    with Image.open(out / evaluation.CONFUSION_PNG) as png:
        assert png.size[0] > 150 and png.size[1] > 150


def test_an_empty_test_split_still_gives_an_evaluation(tmp_path):
    run = evaluation.TestRun(
        true=np.zeros(0, int),
        glimpse_probs={6: np.zeros((0, 2))},
        full_probs=np.zeros((0, 2)),
        distinct=np.zeros(0),
        coverage=np.zeros(0),
        default_glimpses=6,
    )
    body = evaluation.evaluate(run, ["a", "b"], {"training": 4, "test": 0})
    assert body["metadata"]["testPhotos"] == 0 and body["metadata"]["glimpseTop1"]["6"] is None
    evaluation.write(tmp_path, body, "tiny")  # the report and picture say "n/a", not crash
    assert "n/a" in (tmp_path / evaluation.EVALUATION_DIR / evaluation.EVALUATION_MD).read_text()
