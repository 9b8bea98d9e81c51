"""Faithfulness and cost of every explanation method, measured in one run on the dev photos.

    python -m bench.faithfulness --model-dir models --images ../shared/data/imagenet-sample

For each photo and method (the service's own code, service/explain/, with its defaults: IG 50
steps, XRAI and Blur IG 100 steps, SmoothGrad 25 samples, occlusion over a 7x7 grid):
- seconds per explanation: JPEG bytes -> attribution map, medians; the methods run in a
  rotating order on each photo so that the machine's drift hits them alike, after one warm-up
  explanation each;
- deletion and insertion AUC (service/explain/faithfulness.py, 16 steps): the full-image
  classifier's probability for the explained class as the top-ranked pixels of the 224 view are
  greyed out / restored;
- the paper's occlusion test at equal area: black out the top-ranked 8x8-pixel cells (the
  model's grid, on which glimpse boxes lie) covering as much of the view as that photo's 6
  glimpses do, classify the whole view, and report the drop in top-1 accuracy against the label
  (random cells are the reference row). Cells, not pixels: blacking out a third of the pixels
  scattered one by one destroys any photo, which measures the mask's spread, not its place.
Writes faithfulness.json, faithfulness.md and faithfulness.png under --out.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.common import environment, load_photos, markdown_table, write_report
from service.explain import faithfulness, methods
from service.explain.model import Budget, ExplainModel
from service.explain.schemas import ExplainParameters

METHODS = [
    "glimpses",
    "grad_cam",
    "vanilla_gradients",
    "guided_backprop",
    "integrated_gradients",
    "smoothgrad",
    "occlusion",
    "blur_ig",
    "xrai",
]
STEPS = 16
CELL = 8
RANDOM = "random (reference)"


def coverage(att: methods.Attribution) -> float:
    seen = np.zeros(att.map.shape, bool)
    for y0, x0, y1, x1 in att.extras["boxes"].astype(int):
        seen[y0:y1, x0:x1] = True
    return float(seen.mean())


def cell_mask(ranking: np.ndarray, fraction: float) -> np.ndarray:
    """Pixel mask of the top-ranked CELL x CELL cells (by mean ranking) covering `fraction`."""
    n = ranking.shape[0] // CELL
    cells = ranking.reshape(n, CELL, n, CELL).mean(axis=(1, 3))
    top = faithfulness.top_mask(cells, fraction)
    return np.repeat(np.repeat(top, CELL, 0), CELL, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=Path("models"))
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--limit", type=int, default=16, help="photos, spread over the classes")
    args = ap.parse_args()

    images, labels, names = load_photos(args.images, limit=args.limit)
    model = ExplainModel(args.model_dir / "saccader" / "1")
    params = {m: ExplainParameters(method=m, faithfulness_steps=STEPS) for m in METHODS}
    for m in METHODS:  # trace every signature and warm every code path once
        methods.attribute(model, images[0], params[m], Budget())

    rows = METHODS + [RANDOM]
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    deletion: dict[str, list[float]] = {m: [] for m in rows}
    insertion: dict[str, list[float]] = {m: [] for m in rows}
    kept: dict[str, list[bool]] = {m: [] for m in rows}
    original: list[bool] = []
    rng = np.random.default_rng(0)
    for i, (image, label) in enumerate(tqdm(list(zip(images, labels, strict=True)))):
        order = METHODS[i % len(METHODS) :] + METHODS[: i % len(METHODS)]
        results: dict[str, methods.Attribution] = {}
        for m in order:
            start = time.perf_counter()
            results[m] = methods.attribute(model, image, params[m], Budget())
            seconds[m].append(time.perf_counter() - start)
        view = results["vanilla_gradients"].view
        area = coverage(results["glimpses"])
        full = int(np.argmax(model.logits(view[None])[0]))
        original.append(full == label)
        rankings = {m: results[m].ranking for m in METHODS}
        rankings[RANDOM] = rng.random(view.shape[:2])
        occluded = []
        for m in rows:
            # Every method is scored on the class the full-image classifier predicts, so the
            # rows compare rankings of the same evidence.
            s = faithfulness.scores(model, view, rankings[m], full, STEPS, Budget())
            deletion[m].append(s["deletion_auc"])
            insertion[m].append(s["insertion_auc"])
            mask = cell_mask(rankings[m], area)
            occluded.append(np.where(mask[..., None], 0.0, view))
        predicted = np.argmax(model.logits(np.stack(occluded)), axis=1)
        for m, p in zip(rows, predicted, strict=True):
            kept[m].append(bool(p == label))

    base_acc = float(np.mean(original))
    glimpse_s = statistics.median(seconds["glimpses"])
    results_table = {}
    for m in rows:
        entry = {
            "deletion_auc": float(np.mean(deletion[m])),
            "insertion_auc": float(np.mean(insertion[m])),
            "occlusion_top1_drop": base_acc - float(np.mean(kept[m])),
        }
        if m in seconds:
            med = statistics.median(seconds[m])
            entry |= {"seconds_per_explanation": med, "times_glimpses": med / glimpse_s}
        results_table[m] = entry
    by_deletion = sorted(rows, key=lambda m: results_table[m]["deletion_auc"])
    by_insertion = sorted(rows, key=lambda m: -results_table[m]["insertion_auc"])
    for m in rows:
        results_table[m]["deletion_rank"] = by_deletion.index(m) + 1
        results_table[m]["insertion_rank"] = by_insertion.index(m) + 1
    ig, xrai = results_table["integrated_gradients"], results_table["xrai"]
    checks = {
        "ig50_over_glimpses": ig["times_glimpses"],
        "xrai_over_glimpses": xrai["times_glimpses"],
        "ig50_at_least_20x": ig["times_glimpses"] >= 20,
        "xrai_at_least_100x": xrai["times_glimpses"] >= 100,
    }

    def cell(m: str, key: str, fmt: str) -> str:
        return format(results_table[m][key], fmt) if key in results_table[m] else "-"

    table = markdown_table(
        [
            "method",
            "deletion AUC (lower better)",
            "insertion AUC (higher better)",
            "top-1 drop, cells occluded at glimpse area",
            "ms / explanation",
            "x glimpses",
        ],
        [
            [
                m,
                f"{cell(m, 'deletion_auc', '.3f')} (#{results_table[m]['deletion_rank']})",
                f"{cell(m, 'insertion_auc', '.3f')} (#{results_table[m]['insertion_rank']})",
                f"{100 * results_table[m]['occlusion_top1_drop']:.1f} pts",
                (
                    f"{1000 * results_table[m]['seconds_per_explanation']:.0f}"
                    if m in seconds
                    else "-"
                ),
                cell(m, "times_glimpses", ".1f"),
            ]
            for m in rows
        ],
    )
    md = "\n".join(
        [
            f"# Faithfulness and cost of explanations ({len(images)} photos, one run)",
            "",
            f"Full-image top-1 on these photos: {100 * base_acc:.1f}%. Mean glimpse area"
            " (the occlusion budget) follows each photo's 6 glimpses. Ranks (#) are among the"
            f" {len(rows)} rows. Timings are medians, JPEG bytes to attribution map, batch 1.",
            "",
            table,
            "",
            f"- glimpse explanation vs integrated gradients (50 steps):"
            f" {checks['ig50_over_glimpses']:.1f}x cheaper (target >= 20x)",
            f"- glimpse explanation vs XRAI (100 steps): {checks['xrai_over_glimpses']:.1f}x"
            " cheaper (target >= 100x)",
        ]
    )
    write_report(
        args.out,
        "faithfulness",
        {
            "environment": environment(),
            "photos": names,
            "full_image_top1": base_acc,
            "methods": results_table,
            "checks": checks,
        },
        md,
    )
    plot(results_table, rows, args.out / "faithfulness.png")


def plot(results: dict, rows: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    timed = [m for m in rows if "seconds_per_explanation" in results[m]]
    for ax, key, title in (
        (axes[0], "deletion_auc", "Deletion AUC (lower is better)"),
        (axes[1], "insertion_auc", "Insertion AUC (higher is better)"),
    ):
        xs = [1000 * results[m]["seconds_per_explanation"] for m in timed]
        ys = [results[m][key] for m in timed]
        ax.scatter(xs, ys, c=["tab:red" if m == "glimpses" else "tab:blue" for m in timed])
        for m, x, y in zip(timed, xs, ys, strict=True):
            ax.annotate(m, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.axhline(results[RANDOM][key], color="grey", linestyle="--", label="random ranking")
        ax.set_xscale("log")
        ax.set_xlabel("ms per explanation (log)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
