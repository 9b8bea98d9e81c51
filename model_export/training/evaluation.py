"""The evaluation of a trained head on its test split, in the shapes users read.

One dict, written as `evaluation.json` beside the version (`<version>/assets.extra/`) and served
as Vertex AI's `ModelEvaluation` resource: `metrics` follow Vertex's classification metrics
schema (auPrc, logLoss, confidenceMetrics, confusionMatrix with annotationSpecs), and
`metadata` holds what only a hard-attention model has: top-1 of the glimpses at T = 1/2/4/6
against the full image, distinct glimpses, coverage, per-label precision and recall. The same
numbers as a Markdown report and the confusion matrix as a PNG sit beside it.

The scores are those of the served answer: the glimpse classifier at the model's default
number of glimpses (what `:predict` returns), not the full-image classifier.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

METRICS_SCHEMA = (
    "gs://google-cloud-aiplatform/schema/modelevaluation/classification_metrics_1.0.0.yaml"
)
EVALUATION_DIR = "assets.extra"  # beside the SavedModel, as TF Serving's warm-up files are
EVALUATION_JSON = "evaluation.json"
EVALUATION_MD = "evaluation.md"
CONFUSION_PNG = "confusion.png"
THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class TestRun:
    """The model's answers on the test photos: glimpse probabilities per number of glimpses
    {T: [N, K]}, full-image probabilities [N, K], true classes [N], and per photo the distinct
    glimpses and the fraction of the view seen at the default T."""

    true: np.ndarray
    glimpse_probs: dict[int, np.ndarray]
    full_probs: np.ndarray
    distinct: np.ndarray
    coverage: np.ndarray
    default_glimpses: int


def _top1(probs: np.ndarray, true: np.ndarray) -> float | None:
    return float(np.mean(np.argmax(probs, axis=1) == true)) if len(true) else None


def _confidence_metrics(probs: np.ndarray, true: np.ndarray) -> list[dict]:
    """Vertex's confidenceMetrics: one-vs-rest over every (photo, label) pair at each
    threshold, micro-averaged, plus the top-1-only precision and recall."""
    n, k = probs.shape
    onehot = np.zeros_like(probs, dtype=bool)
    onehot[np.arange(n), true] = True
    top = np.argmax(probs, axis=1)
    out = []
    for t in THRESHOLDS:
        chosen = probs >= t
        tp = int(np.sum(chosen & onehot))
        precision = tp / max(int(chosen.sum()), 1)
        recall = tp / max(n, 1)
        top_hit = (top == true) & (probs[np.arange(n), top] >= t)
        top_chosen = int(np.sum(probs[np.arange(n), top] >= t))
        out.append(
            {
                "confidenceThreshold": t,
                "precision": round(precision, 6),
                "recall": round(recall, 6),
                "f1Score": round(2 * precision * recall / max(precision + recall, 1e-12), 6),
                "precisionAt1": round(int(top_hit.sum()) / max(top_chosen, 1), 6),
                "recallAt1": round(int(top_hit.sum()) / max(n, 1), 6),
            }
        )
    return out


def evaluate(run: TestRun, labels: list[str], split_counts: dict[str, int]) -> dict:
    """The ModelEvaluation body (without `name`, which the serving side gives it)."""
    from sklearn.metrics import average_precision_score, log_loss

    k = len(labels)
    probs = run.glimpse_probs[run.default_glimpses]
    true = run.true
    predicted = np.argmax(probs, axis=1) if len(true) else np.zeros(0, int)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (true, predicted), 1)
    per_label = []
    for i, label in enumerate(labels):
        support = int(confusion[i].sum())
        chosen = int(confusion[:, i].sum())
        per_label.append(
            {
                "displayName": label,
                "testPhotos": support,
                "precision": round(confusion[i, i] / chosen, 4) if chosen else None,
                "recall": round(confusion[i, i] / support, 4) if support else None,
            }
        )
    metrics: dict = {
        "confusionMatrix": {
            "annotationSpecs": [
                {"id": str(i), "displayName": name} for i, name in enumerate(labels)
            ],
            "rows": confusion.tolist(),
        },
        "confidenceMetrics": _confidence_metrics(probs, true) if len(true) else [],
    }
    if len(true):
        onehot = np.eye(k)[true]
        metrics["auPrc"] = round(float(average_precision_score(onehot, probs, average="micro")), 6)
        metrics["logLoss"] = round(float(log_loss(true, probs, labels=list(range(k)))), 6)
    glimpse_top1 = {str(t): _top1(p, true) for t, p in sorted(run.glimpse_probs.items())}
    full = _top1(run.full_probs, true)
    default = glimpse_top1[str(run.default_glimpses)]
    return {
        "metricsSchemaUri": METRICS_SCHEMA,
        "metrics": metrics,
        "createTime": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "metadata": {
            "testPhotos": int(len(true)),
            "splits": split_counts,
            "servedAnswer": f"glimpses, T={run.default_glimpses}",
            "glimpseTop1": glimpse_top1,
            "fullImageTop1": full,
            "glimpseOverFull": round(default / full, 4) if default is not None and full else None,
            "distinctGlimpses": float(np.mean(run.distinct)) if len(true) else None,
            "coverage": float(np.mean(run.coverage)) if len(true) else None,
            "perLabel": per_label,
        },
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def markdown(evaluation: dict, title: str) -> str:
    meta, metrics = evaluation["metadata"], evaluation["metrics"]
    specs = [s["displayName"] for s in metrics["confusionMatrix"]["annotationSpecs"]]
    lines = [
        f"# Evaluation: {title}",
        "",
        f"{meta['testPhotos']} test photos; splits {meta['splits']}. The served answer is the"
        f" {meta['servedAnswer']}.",
        "",
        "| answer | top-1 |",
        "|---|---|",
        *[f"| glimpses, T={t} | {_pct(v)} |" for t, v in meta["glimpseTop1"].items()],
        f"| full image | {_pct(meta['fullImageTop1'])} |",
        "",
        f"Glimpses / full image: {meta['glimpseOverFull']}; distinct glimpses:"
        f" {meta['distinctGlimpses']}; coverage of the view: {_pct(meta['coverage'])};"
        f" auPrc {metrics.get('auPrc', 'n/a')}; log loss {metrics.get('logLoss', 'n/a')}.",
        "",
        "| label | test photos | precision | recall |",
        "|---|---|---|---|",
        *[
            f"| {r['displayName']} | {r['testPhotos']} | {_pct(r['precision'])} |"
            f" {_pct(r['recall'])} |"
            for r in meta["perLabel"]
        ],
        "",
        "Confusion matrix (rows: true label, columns: answer):",
        "",
        "| | " + " | ".join(specs) + " |",
        "|---|" + "---|" * len(specs),
        *[
            f"| {name} | " + " | ".join(str(v) for v in row) + " |"
            for name, row in zip(specs, metrics["confusionMatrix"]["rows"], strict=True)
        ],
        "",
    ]
    return "\n".join(lines)


def confusion_png(evaluation: dict, path: Path) -> None:
    """The confusion matrix as a picture: each row shaded by its share of the true label's
    photos (so a small class's mistakes show as loudly as a big one's), counts written in."""
    from PIL import Image, ImageDraw, ImageFont

    cm = evaluation["metrics"]["confusionMatrix"]
    names = [s["displayName"] for s in cm["annotationSpecs"]]
    rows = np.array(cm["rows"], dtype=float).reshape(len(names), len(names))
    k = len(names)
    font = ImageFont.load_default(size=14)
    cell = 44 if k <= 20 else 24
    margin = 16 + 8 * min(max((len(n) for n in names), default=4), 24)
    size = (margin + cell * k + 16, margin + cell * k + 16)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    share = rows / np.maximum(rows.sum(axis=1, keepdims=True), 1)
    for i in range(k):
        draw.text((8, margin + i * cell + cell / 2), names[i][:24], fill="black", font=font,
                  anchor="lm")  # fmt: skip
        for j in range(k):
            shade = int(255 - 200 * share[i, j])
            colour = (shade, shade, 255) if i == j else (255, shade, shade)
            x, y = margin + j * cell, margin + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour, outline="#ccc")
            if cell >= 40 and rows[i, j]:
                draw.text((x + cell / 2, y + cell / 2), str(int(rows[i, j])), fill="black",
                          font=font, anchor="mm")  # fmt: skip
    column_labels = Image.new("RGB", (margin, cell * k), "white")
    column_draw = ImageDraw.Draw(column_labels)
    for j in range(k):
        column_draw.text((margin - 8, j * cell + cell / 2), names[j][:24], fill="black",
                         font=font, anchor="rm")  # fmt: skip
    image.paste(column_labels.rotate(-90, expand=True), (margin, 0))
    draw.text((4, 4), "true \\ answer", fill="grey", font=font)
    image.save(path)


def write(folder: Path, evaluation: dict, title: str) -> Path:
    """Write the JSON, Markdown and PNG into `folder/assets.extra/`; returns that folder."""
    out = Path(folder) / EVALUATION_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / EVALUATION_JSON).write_text(json.dumps(evaluation, indent=2) + "\n")
    (out / EVALUATION_MD).write_text(markdown(evaluation, title))
    confusion_png(evaluation, out / CONFUSION_PNG)
    return out


def read(version_folder: Path) -> dict | None:
    path = Path(version_folder) / EVALUATION_DIR / EVALUATION_JSON
    return json.loads(path.read_text()) if path.exists() else None
