"""Faithfulness and cost of every explanation method, on the same photos in one run.

    python -m bench.faithfulness --model-dir models --images ../shared/data/imagenet-sample

For each photo, every method (the service's own code, service/explain/, with its defaults:
IG 50 steps, XRAI and Blur IG 100 steps, SmoothGrad 25 samples, occlusion over a 7x7 grid) and
a random ranking as the reference row, judged by the full-image classifier:
- seconds per explanation: JPEG bytes -> map (for sag: and its attention graph), medians; the
  methods run in a rotating order on each photo so that the machine's drift hits them alike;
- *sufficiency at equal area*: keep only the map's top-ranked 8x8 cells covering as much of
  the view as that photo's glimpses do (T=6), blur the rest (sigma 16 px): how often the
  full-image prediction survives, and the class probability left;
- *necessity at equal area*: blur those cells instead (the Saccader paper's Figure 5b done
  region-wise): the drop in top-1 accuracy against the label, how often the prediction
  changes, and the drop in the class probability;
- *PIC* (Kapishnikov et al., XRAI, 2019): SIC and AIC from `saliency.metrics.pic` with the
  paper's thresholds and its filtering (photos the classifier is not >= 80% sure of are
  skipped, the same photos for every method), on the first --pic-limit photos;
- pixel-level deletion/insertion AUC (RISE), labelled as what it is: greying scattered single
  pixels destroys any photo, so it rewards scattered maps.
The glimpse maps rank glimpse pixels by glimpse order (sag: by how many minimal sufficient sets
hold the glimpse) and every other pixel by the where path's evidence map, the predicted class's
per-location probability that chose the glimpses (service/explain/methods.py).
Writes faithfulness.json, faithfulness.md and faithfulness.png under --out.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.common import arguments, environment, load_photos, markdown_table, write_report
from service import geometry
from service.explain import faithfulness, methods
from service.explain.model import Budget, ExplainModel
from service.explain.schemas import ExplainParameters
from service.savedmodel import load
from service.scheduler import FairScheduler

METHODS = [
    "glimpses",
    "sag",
    "grad_cam",
    "occlusion",
    "xrai",
    "integrated_gradients",
    "blur_ig",
    "vanilla_gradients",
    "guided_backprop",
    "smoothgrad",
]
RANDOM = "random (reference)"
PIXEL_STEPS = 16
# The XRAI paper's thresholds (saliency's pic_metrics notebook).
PIC_THRESHOLDS = [0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.10, 0.13, 0.21, 0.34, 0.5, 0.75]


def explain_photo(model, image: bytes, params: dict, order: list[str]) -> tuple[dict, dict]:
    """Every method on one photo: (attributions, seconds)."""
    results, seconds = {}, {}
    for m in order:
        start = time.perf_counter()
        results[m] = methods.attribute(model, image, params[m], Budget())
        seconds[m] = time.perf_counter() - start
    return results, seconds


# -- PIC, in worker processes (scipy's interpolation is single-threaded and slow) ------------


def _cached_pic():
    """saliency.metrics.pic with its two costly steps memoised: SIC and AIC blur and compress
    the same images, and every method starts from the same fully blurred one. Same results;
    also maps NumPy 2's trapezoid to the trapz the module still calls (a rename only)."""
    from saliency.metrics import pic

    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid  # type: ignore[attr-defined]
    blur, entropy = pic.create_blurred_image, pic.estimate_image_entropy
    blurs: dict[bytes, np.ndarray] = {}
    sizes: dict[bytes, float] = {}

    def create_blurred_image(full_img, pixel_mask, method="linear"):
        key = np.packbits(pixel_mask).tobytes()
        if key not in blurs:
            blurs[key] = blur(full_img, pixel_mask, method)
        return blurs[key]

    def estimate_image_entropy(image):
        key = image.tobytes()
        if key not in sizes:
            sizes[key] = entropy(image)
        return sizes[key]

    pic.create_blurred_image = create_blurred_image
    pic.estimate_image_entropy = estimate_image_entropy
    return pic, blurs, sizes


_WORKER: dict = {}


def offline_model(path: Path) -> ExplainModel:
    """The explain signatures of one export, alone in this process (its own turns)."""
    return ExplainModel(path, load(path), FairScheduler())


def _pic_init(model_path: str) -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _WORKER["model"] = offline_model(Path(model_path))
    _WORKER["pic"] = _cached_pic()


def _pic_photo(
    task: tuple[int, np.ndarray, dict[str, np.ndarray]],
) -> tuple[int, dict[str, dict] | str]:
    """SIC and AIC of every ranking of one photo; or why the photo is skipped (PIC's rules)."""
    index, view, rankings = task
    model = _WORKER["model"]
    pic, blurs, sizes = _WORKER["pic"]
    blurs.clear()
    sizes.clear()
    img = np.clip(np.round(view), 0, 255).astype(np.uint8)
    k = int(np.argmax(model.logits(img[None].astype(np.float32))[0]))

    def softmax_of_k(batch: np.ndarray) -> list[float]:
        probs = methods.softmax(model.logits(batch.astype(np.float32)).astype(np.float64))
        return probs[:, k].tolist()

    def correct(batch: np.ndarray) -> list[float]:
        return (np.argmax(model.logits(batch.astype(np.float32)), 1) == k).astype(float).tolist()

    np.random.seed(index)  # the module draws its random mask from NumPy's global generator
    random_mask = pic.generate_random_mask(img.shape[0], img.shape[1])
    out: dict[str, dict] = {}
    for name, ranking in rankings.items():
        try:
            sic = pic.compute_pic_metric(
                img, ranking, random_mask, softmax_of_k, PIC_THRESHOLDS, keep_monotonous=True
            )
            aic = pic.compute_pic_metric(
                img, ranking, random_mask, correct, PIC_THRESHOLDS, min_pred_value=0.5
            )
        except pic.ComputePicMetricError as e:
            return index, str(e).split(".")[0]  # image-level: the same for every ranking
        out[name] = {"sic": sic, "aic": aic}
    return index, out


def run_pic(model_path: Path, tasks: list, workers: int) -> tuple[dict, dict, list[str]]:
    from saliency.metrics import pic

    _cached_pic()  # the aggregation below calls np.trapz too
    per_method: dict[str, dict[str, list]] = {}
    skipped: list[str] = []
    # Spawned, not forked: a fork of a process that runs TensorFlow's thread pools can hang.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=spawn, initializer=_pic_init, initargs=(str(model_path),)
    ) as pool:
        for _, result in tqdm(pool.map(_pic_photo, tasks), total=len(tasks), desc="PIC"):
            if isinstance(result, str):
                skipped.append(result)
                continue
            for name, curves in result.items():
                entry = per_method.setdefault(name, {"sic": [], "aic": []})
                entry["sic"].append(curves["sic"])
                entry["aic"].append(curves["aic"])
    sic = {
        m: pic.aggregate_individual_pic_results(v["sic"], method="median")
        for m, v in per_method.items()
    }
    aic = {
        m: pic.aggregate_individual_pic_results(v["aic"], method="mean")
        for m, v in per_method.items()
    }
    return sic, aic, skipped


# -- the run -------------------------------------------------------------------------------


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--limit", type=int, default=48, help="photos, spread over the classes")
    ap.add_argument("--pic-limit", type=int, default=16, help="photos PIC runs on (the first)")
    ap.add_argument("--workers", type=int, default=2, help="processes for PIC")
    args = ap.parse_args()

    images, labels, names = load_photos(args.images, limit=args.limit)
    model_path = args.model_dir / "saccader" / "1"
    model = offline_model(model_path)
    params = {m: ExplainParameters(method=m) for m in METHODS}
    explain_photo(model, images[0], params, METHODS)  # trace every signature once

    rows = METHODS + [RANDOM]
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    scores: dict[str, list[dict]] = {m: [] for m in rows}
    full_correct: list[bool] = []
    areas: list[float] = []
    pic_tasks = []
    rng = np.random.default_rng(0)
    for i, (image, label) in enumerate(tqdm(list(zip(images, labels, strict=True)))):
        order = METHODS[i % len(METHODS) :] + METHODS[: i % len(METHODS)]
        results, took = explain_photo(model, image, params, order)
        for m, s in took.items():
            seconds[m].append(s)
        view = results["grad_cam"].view
        area = geometry.coverage(results["glimpses"].extras["boxes"])
        areas.append(area)
        rankings = {m: results[m].ranking for m in METHODS}
        rankings[RANDOM] = rng.random(view.shape[:2])
        # Every method is judged on the class the full-image classifier predicts, so the rows
        # compare rankings of the same evidence.
        full = int(np.argmax(model.logits(view[None])[0]))
        for m in rows:
            s = faithfulness.equal_area(model, view, rankings[m], full, area, Budget())
            s |= faithfulness.pixel_curves(model, view, rankings[m], full, PIXEL_STEPS, Budget())
            s["label"] = int(label)
            scores[m].append(s)
        full_correct.append(scores[RANDOM][-1]["full_class"] == label)
        if i < args.pic_limit:
            pic_tasks.append((i, view, {m: rankings[m].astype(np.float32) for m in rows}))
    del model
    sic, aic, skipped = run_pic(model_path, pic_tasks, args.workers)

    table = summarise(rows, scores, seconds, sic, aic)
    full_top1 = float(np.mean(full_correct))
    glimpses = table["glimpses"]
    others = [m for m in METHODS if m not in ("glimpses", "sag")]
    best_suff = max(table[m]["sufficiency_agreement"] for m in others)
    best_nec = max(table[m]["necessity_top1_drop"] for m in others)
    checks = {
        "sufficiency_gap_to_best_other": best_suff - glimpses["sufficiency_agreement"],
        "necessity_gap_to_best_other": best_nec - glimpses["necessity_top1_drop"],
        "sufficiency_over_random": glimpses["sufficiency_agreement"]
        - table[RANDOM]["sufficiency_agreement"],
        "necessity_over_random": glimpses["necessity_top1_drop"]
        - table[RANDOM]["necessity_top1_drop"],
    }
    checks["within_2_points_of_best"] = (
        checks["sufficiency_gap_to_best_other"] <= 0.02
        and checks["necessity_gap_to_best_other"] <= 0.02
    )
    checks["20_points_over_random"] = (
        checks["sufficiency_over_random"] >= 0.20 and checks["necessity_over_random"] >= 0.20
    )
    pic_photos = len(pic_tasks) - len(skipped)
    md = render(table, rows, len(images), full_top1, float(np.mean(areas)), checks, pic_photos,
                len(pic_tasks))  # fmt: skip
    write_report(
        args.out,
        "faithfulness",
        {
            "environment": environment(),
            "photos": names,
            "full_image_top1": full_top1,
            "mean_area": float(np.mean(areas)),
            "blur_sigma": faithfulness.BLUR_SIGMA,
            "pic": {
                "thresholds": PIC_THRESHOLDS,
                "photos_used": pic_photos,
                "photos_tried": len(pic_tasks),
                "skipped_because": skipped,
                # The median curves at 51 points of the normalised-entropy axis (0, 0.02, ...).
                "curve_x": _every(next(iter(sic.values())).curve_x) if sic else [],
                "sic_curves": {m: _every(r.curve_y) for m, r in sic.items()},
                "aic_curves": {m: _every(r.curve_y) for m, r in aic.items()},
            },
            "methods": table,
            "checks": checks,
        },
        md,
    )
    plot(table, rows, sic, aic, args.out / "faithfulness.png")


def _every(values, points: int = 51) -> list[float]:
    """`points` evenly spaced samples of a curve (saliency gives 1001), rounded: the JSON
    keeps the curve's shape without a megabyte of digits."""
    values = np.asarray(values, float)
    index = np.linspace(0, len(values) - 1, points).round().astype(int)
    return [round(float(v), 4) for v in values[index]]


def summarise(rows, scores, seconds, sic, aic) -> dict[str, dict]:
    table: dict[str, dict] = {}
    for m in rows:
        s = scores[m]
        acc = np.mean([x["full_class"] == x["label"] for x in s])
        entry = {
            "sufficiency_agreement": float(np.mean([x["sufficiency_keeps_prediction"] for x in s])),
            "sufficiency_probability": float(np.mean([x["sufficiency_probability"] for x in s])),
            "necessity_top1_drop": float(
                acc - np.mean([x["necessity_class"] == x["label"] for x in s])
            ),
            "necessity_changed": float(np.mean([x["necessity_changes_prediction"] for x in s])),
            "necessity_probability_drop": float(np.mean([x["necessity_drop"] for x in s])),
            "pixel_deletion_auc": float(np.mean([x["pixel_deletion_auc"] for x in s])),
            "pixel_insertion_auc": float(np.mean([x["pixel_insertion_auc"] for x in s])),
        }
        if m in sic:
            entry |= {"sic_auc": float(sic[m].auc), "aic_auc": float(aic[m].auc)}
        if m in seconds:
            entry["seconds_per_explanation"] = statistics.median(seconds[m])
        table[m] = entry
    ranked = {  # key -> higher is better?
        "sufficiency_agreement": True,
        "necessity_top1_drop": True,
        "sic_auc": True,
        "aic_auc": True,
        "pixel_deletion_auc": False,
        "pixel_insertion_auc": True,
    }
    for key, higher in ranked.items():
        present = [m for m in rows if key in table[m]]
        order = sorted(present, key=lambda m: -table[m][key] if higher else table[m][key])
        for m in present:
            table[m][f"{key}_rank"] = order.index(m) + 1
    glimpse_s = table["glimpses"].get("seconds_per_explanation")
    for m in rows:
        if "seconds_per_explanation" in table[m] and glimpse_s:
            table[m]["times_glimpses"] = table[m]["seconds_per_explanation"] / glimpse_s
    return table


def render(table, rows, photos, full_top1, area, checks, pic_photos, pic_tried) -> str:
    def pct(m: str, key: str) -> str:
        return f"{100 * table[m][key]:.1f}"

    def ranked(m: str, key: str, fmt: str = ".3f") -> str:
        if key not in table[m]:
            return "-"
        return f"{format(table[m][key], fmt)} (#{table[m][f'{key}_rank']})"

    def ms(m: str) -> str:
        t = table[m].get("seconds_per_explanation")
        return "-" if t is None else f"{1000 * t:.0f}"

    equal_area = markdown_table(
        [
            "method",
            "sufficiency: prediction kept %",
            "class prob. kept",
            "necessity: top-1 drop, points",
            "prediction changed %",
            "class prob. lost",
            "ms / explanation",
        ],
        [
            [
                m,
                f"{pct(m, 'sufficiency_agreement')} (#{table[m]['sufficiency_agreement_rank']})",
                f"{table[m]['sufficiency_probability']:.3f}",
                f"{pct(m, 'necessity_top1_drop')} (#{table[m]['necessity_top1_drop_rank']})",
                pct(m, "necessity_changed"),
                f"{table[m]['necessity_probability_drop']:.3f}",
                ms(m),
            ]
            for m in rows
        ],
    )
    other = markdown_table(
        ["method", "SIC AUC (higher better)", "AIC AUC (higher better)",
         "pixel deletion AUC (lower better)", "pixel insertion AUC (higher better)"],
        [
            [m, ranked(m, "sic_auc"), ranked(m, "aic_auc"), ranked(m, "pixel_deletion_auc"),
             ranked(m, "pixel_insertion_auc")]
            for m in rows
        ],
    )  # fmt: skip
    c = checks
    return "\n".join(
        [
            f"# Faithfulness and cost of explanations ({photos} photos, one run)",
            "",
            f"Full-image top-1 on these photos: {100 * full_top1:.1f}%. Judged by the"
            " full-image classifier on its own prediction. Equal area: each photo's 8x8 cells"
            f" covering as much of the view as its 6 glimpses (mean {100 * area:.1f}%), ranked"
            f" by each map; the rest (sufficiency) or those cells (necessity) blurred with a"
            f" {faithfulness.BLUR_SIGMA:g}-px Gaussian. Ranks (#) are among the {len(rows)}"
            " rows. Timings are medians, JPEG bytes to map, batch 1.",
            "",
            "## At equal area (the fair comparison)",
            "",
            equal_area,
            "",
            f"- glimpses vs the best other method: sufficiency"
            f" {100 * -c['sufficiency_gap_to_best_other']:+.1f} points, necessity"
            f" {100 * -c['necessity_gap_to_best_other']:+.1f} points (target: within 2)",
            f"- glimpses vs random: sufficiency {100 * c['sufficiency_over_random']:+.1f},"
            f" necessity {100 * c['necessity_over_random']:+.1f} points (target: >= +20)",
            "",
            "## PIC (XRAI paper) and pixel-level deletion/insertion",
            "",
            f"PIC on {pic_photos} of the first {pic_tried} photos (the others fail PIC's own"
            " filters: confidence below 80%, or a fully blurred image no less informative)."
            " Pixel deletion/insertion grey single pixels (16 steps): a metric that rewards"
            " scattered maps, shown for comparison only.",
            "",
            other,
        ]
    )


def plot(table, rows, sic, aic, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    y = np.arange(len(rows))
    colours = ["tab:red" if m in ("glimpses", "sag") else "tab:grey" if m == RANDOM else
               "tab:blue" for m in rows]  # fmt: skip
    for ax, key, title in (
        (axes[0], "sufficiency_agreement", "Sufficiency at equal area: prediction kept (%)"),
        (axes[1], "necessity_top1_drop", "Necessity at equal area: top-1 drop (points)"),
    ):
        ax.barh(y, [100 * table[m][key] for m in rows], color=colours)
        ax.set_yticks(y, rows, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    for m, r in sic.items():
        style = "-" if m in ("glimpses", "sag") else ":" if m == RANDOM else "--"
        axes[2].plot(r.curve_x, r.curve_y, style, label=f"{m} ({r.auc:.2f})")
    axes[2].set_xlabel("normalised estimation of entropy")
    axes[2].set_ylabel("normalised softmax")
    axes[2].set_title("Softmax information curve (PIC, median)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
