"""Faithfulness and cost of every explanation method, on the same photos in one run.

    python -m bench.faithfulness --model-dir models --images ../shared/data/imagenet-sample \\
        --limit 200 --slow-limit 64

Photos: --limit photos spread over the classes; the glimpses, SAG and the cheap methods (Grad-CAM,
vanilla gradients, guided backprop, occlusion: under a second each) run on all of them, the slow
ones (integrated gradients, Blur IG, XRAI, SmoothGrad: 1 to 5 s each) on the first --slow-limit.
"First" is in run order, which puts an even spread of the photos first (`run_order`): the
first 64 of 200 sorted by synset would all be animals. Every method is the service's own code
(service/explain/) with its defaults (IG 50 steps, XRAI and Blur IG 100 steps, SmoothGrad 25
samples, occlusion over a 7x7 grid); a random ranking is the reference row. The methods run in
an order that rotates from photo to photo, so the machine's drift hits them alike.

Scores, per photo and method:
- seconds per explanation: JPEG bytes -> map (for sag: and its attention graph), medians;
- *equal area*: the map's top 8x8 cells covering as much of the view as that photo's glimpses do
  (T=6). *Sufficiency*: everything else removed; is the judge's full-view prediction kept, and
  with what probability. *Necessity*: those cells removed (the Saccader paper's Figure 5b done
  region-wise): the drop in top-1 accuracy against the label, how often the prediction changes,
  the probability lost. Each under two removals (service/explain/faithfulness.py): a Gaussian
  blur (sigma 16 px), and ROAD's noisy linear imputation (Rong et al., ICML 2022), which leaves
  no outline of the removed region for the judge to read a class from;
- and by two judges, each on the class it predicts itself on the full view: Lite0, the model
  explained (self-judging, as before), and EfficientNet-Lite2 (bench/judge.py), which never saw
  the explanations: a map that wins only under Lite0 found Lite0's habits, not the photo's
  evidence;
- *PIC* (Kapishnikov et al., XRAI, 2019): SIC and AIC from `saliency.metrics.pic` with the
  paper's thresholds and its filtering (photos Lite0 is not >= 80% sure of are skipped, the same
  photos for every method), on the first --pic-limit photos only: each photo costs minutes;
- pixel-level deletion/insertion AUC (RISE), judged by Lite0 on the --slow-limit photos,
  labelled as what it is: greying scattered single pixels destroys any photo, so it rewards
  scattered maps.
Every figure comes with a 95% percentile-bootstrap interval over photos (bench/stats.py), with one
draw of resampled photos per table, so a difference between two rows is paired: "glimpses vs the
best other method" is given as the interval of the difference itself. Ranks: 1 = best, ties
share a rank.

The glimpse maps rank glimpse pixels by glimpse order (sag: by how many minimal sufficient sets
hold the glimpse) and every other pixel by the where path's evidence map, the predicted class's
per-location probability that chose the glimpses (service/explain/methods.py).
Writes faithfulness.json, faithfulness.md and faithfulness.png under --out
(faithfulness_<name>.* for another --model-name).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench import road, stats
from bench.common import arguments, environment, load_photos, markdown_table, write_report
from bench.judge import NAME as JUDGE_NAME
from bench.judge import Lite2Judge
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
SLOW = ("xrai", "integrated_gradients", "blur_ig", "smoothgrad")
FAST = [m for m in METHODS if m not in SLOW]
RANDOM = "random (reference)"
OURS = ("glimpses", "sag")  # "the best other method" is the best of the rest
JUDGES = {"lite0": "Lite0 (self)", "lite2": "Lite2 (independent)"}
REMOVALS = {"blur": "blur", "road": "ROAD"}
SETS = {  # photo set -> its rows; "all_methods" is the first --slow-limit photos
    "all_methods": METHODS + [RANDOM],
    "fast_methods": FAST + [RANDOM],
}
PIXEL_STEPS = 16
# The XRAI paper's thresholds (saliency's pic_metrics notebook).
PIC_THRESHOLDS = [0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.10, 0.13, 0.21, 0.34, 0.5, 0.75]


# -- per-photo figures ---------------------------------------------------------------------


def _top1_drop(s: dict, label: int) -> float:
    return float(s["full_class"] == label) - float(s["necessity_class"] == label)


# figure -> (higher is better, its per-photo value from one judge's equal-area scores)
FIGURES: dict[str, tuple[bool, Callable[[dict, int], float]]] = {
    "sufficiency_agreement": (True, lambda s, _: float(s["sufficiency_keeps_prediction"])),
    "sufficiency_probability": (True, lambda s, _: s["sufficiency_probability"]),
    "necessity_top1_drop": (True, _top1_drop),
    "necessity_changed": (True, lambda s, _: float(s["necessity_changes_prediction"])),
    "necessity_probability_drop": (True, lambda s, _: s["necessity_drop"]),
}
HEADLINE = {
    "sufficiency_agreement": "sufficiency, prediction kept",
    "necessity_top1_drop": "necessity, top-1 drop",
}


@dataclass(frozen=True)
class Column:
    """One figure of the report: what each photo gives for a row, and how photos combine."""

    key: str
    higher_is_better: bool
    per_photo: Callable[[dict, str], float | np.ndarray]
    # None: the mean of one number per photo; else a function of the [photos, ...] values.
    statistic: Callable[[np.ndarray], float] | None = None


def equal_area_columns() -> list[Column]:
    """`<judge>_<removal>_<figure>` for every judge, removal and figure."""
    columns = []
    for judge in JUDGES:
        for removal in REMOVALS:
            for figure, (higher, value) in FIGURES.items():

                def per_photo(rec: dict, m: str, j=judge, r=removal, v=value) -> float:
                    return v(rec["judged"][j][r][m], rec["label"])

                columns.append(Column(f"{judge}_{removal}_{figure}", higher, per_photo))
    return columns


PIXEL_COLUMNS = [
    Column("lite0_pixel_deletion_auc", False, lambda rec, m: rec["pixel"][m]["deletion"]),
    Column("lite0_pixel_insertion_auc", True, lambda rec, m: rec["pixel"][m]["insertion"]),
]


def run_order(count: int, *firsts: int) -> list[int]:
    """Photo indices in the order they run: for each n in `firsts` (ascending), the first n are
    spread evenly over all `count` photos (which load_photos spread over the classes), so each
    prefix that a slower part of the benchmark stops at is a fair sample, not the first synsets."""
    order: list[int] = []
    for n in (*firsts, count):
        picked = np.unique(np.floor(np.arange(n) * count / max(n, 1)).astype(int))
        order += [int(i) for i in picked if int(i) not in order]
    order += [i for i in range(count) if i not in order]
    return order


def rotated(names: list[str], by: int) -> list[str]:
    """`names` starting at position `by` (mod len): each photo starts with another method."""
    by %= len(names)
    return names[by:] + names[:by]


def explain_photo(model, image: bytes, params: dict, order: list[str]) -> tuple[dict, dict]:
    """Every method on one photo: (attributions, seconds)."""
    results, seconds = {}, {}
    for m in order:
        start = time.perf_counter()
        results[m] = methods.attribute(model, image, params[m], Budget())
        seconds[m] = time.perf_counter() - start
    return results, seconds


def judge_photo(
    model: ExplainModel, judge: Lite2Judge, view: np.ndarray, rankings: dict, area: float, seed: int
) -> dict[str, dict[str, dict[str, dict]]]:
    """Equal-area scores [judge][removal][row]: every row's sufficiency and necessity images
    under both removals, classified by both judges in one batch each; each judge scores the
    class it predicts on the full view (so the two judges may score different classes)."""
    removers = {
        "blur": faithfulness.blur_remover(view),
        "road": road.road_remover(view, seed),
    }
    images = [view[None]]
    for removal in REMOVALS:
        images += [
            faithfulness.equal_area_views(r, area, removers[removal])[0] for r in rankings.values()
        ]
    batch = np.concatenate(images)
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for name, logits in (("lite0", model.logits(batch, Budget())), ("lite2", judge.logits(batch))):
        k = int(np.argmax(logits[0]))
        out[name] = {}
        row = 1
        for removal in REMOVALS:
            out[name][removal] = {}
            for m in rankings:
                out[name][removal][m] = faithfulness.equal_area_scores(logits[[0, row, row + 1]], k)
                row += 2
    return out


def pixel_photo(model: ExplainModel, view: np.ndarray, rankings: dict, k: int) -> dict:
    """RISE's pixel deletion/insertion AUCs of every row, by Lite0 (34 images a row)."""
    out = {}
    for m, ranking in rankings.items():
        s = faithfulness.pixel_curves(model, view, ranking, k, PIXEL_STEPS, Budget())
        out[m] = {"deletion": s["pixel_deletion_auc"], "insertion": s["pixel_insertion_auc"]}
    return out


# -- PIC, in worker processes (scipy's interpolation is single-threaded and slow) ------------


def pic_blurred_image(full_img: np.ndarray, pixel_mask: np.ndarray, method: str = "linear"):
    """saliency.metrics.pic.create_blurred_image, with one Delaunay triangulation of the kept
    pixels for all channels instead of one per channel (scipy's `griddata` triangulates on
    every call, and that is nearly all of PIC's time): the same numbers in a third of it."""
    from saliency.metrics import pic
    from scipy.interpolate import LinearNDInterpolator
    from scipy.spatial import Delaunay

    if method != "linear" or full_img.ndim != 3:
        return pic.create_blurred_image(full_img, pixel_mask, method)
    mask = pixel_mask.copy()
    h, w = mask.shape
    mask[[0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]] = True  # PIC always keeps the corners
    if np.all(mask):
        return full_img
    mean_color = np.mean(full_img, axis=(0, 1))
    blurred = full_img * np.expand_dims(mask, axis=2).astype(np.float32)
    known, unknown = np.argwhere(mask > 0), np.argwhere(mask == 0)
    triangles = Delaunay(known)
    for channel in range(full_img.shape[2]):
        values = full_img[:, :, channel][tuple(known.T)]
        fill = mean_color[channel]
        interpolated = LinearNDInterpolator(triangles, values, fill_value=fill)(unknown)
        blurred[:, :, channel][tuple(unknown.T)] = interpolated
    if issubclass(full_img.dtype.type, np.integer):
        blurred = np.round(blurred)
    return blurred.astype(full_img.dtype)


def _cached_pic():
    """saliency.metrics.pic with its two costly steps memoised: SIC and AIC blur and compress
    the same images, and every method starts from the same fully blurred one; the blur itself
    triangulates once per image (`pic_blurred_image`). Same results; also maps NumPy 2's
    trapezoid to the trapz the module still calls (a rename only)."""
    from saliency.metrics import pic

    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid  # type: ignore[attr-defined]
    blur, entropy = pic_blurred_image, pic.estimate_image_entropy
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
) -> tuple[int, dict[str, dict[str, np.ndarray]] | str]:
    """SIC and AIC curves of every ranking of one photo; or why the photo is skipped (PIC's
    rules). Only the curves come back: PIC's results also hold every intermediate image."""
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
    out: dict[str, dict[str, np.ndarray]] = {}
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
        out[name] = {"x": np.asarray(sic.curve_x), "sic": np.asarray(sic.curve_y),
                     "aic": np.asarray(aic.curve_y)}  # fmt: skip
    return index, out


def run_pic(model_path: Path, tasks: list, workers: int) -> tuple[list[dict], list[str]]:
    """Every PIC task's curves (photos PIC's filters keep) and the reasons for the others."""
    kept: list[dict] = []
    skipped: list[str] = []
    if not tasks:
        return kept, skipped
    # Spawned, not forked: a fork of a process that runs TensorFlow's thread pools can hang.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=spawn, initializer=_pic_init, initargs=(str(model_path),)
    ) as pool:
        for _, result in tqdm(pool.map(_pic_photo, tasks), total=len(tasks), desc="PIC"):
            if isinstance(result, str):
                skipped.append(result)
            else:
                kept.append(result)
    return kept, skipped


def pic_columns(curve_x: np.ndarray) -> list[Column]:
    """SIC (median curve) and AIC (mean curve) AUCs, saliency's aggregation: a statistic of all
    the photos' curves at once, so the bootstrap resamples whole curves."""

    def area(aggregate: Callable) -> Callable[[np.ndarray], float]:
        return lambda curves: float(np.trapezoid(aggregate(curves, axis=0), curve_x))

    return [
        Column("lite0_pic_sic_auc", True, lambda rec, m: rec[m]["sic"], area(np.median)),
        Column("lite0_pic_aic_auc", True, lambda rec, m: rec[m]["aic"], area(np.mean)),
    ]


# -- summaries -----------------------------------------------------------------------------


def ranks(values: dict[str, float], higher_is_better: bool) -> dict[str, int]:
    """1 = best; rows with equal values share the better rank (glimpses and sag often do)."""
    sign = 1.0 if higher_is_better else -1.0
    return {m: 1 + sum(sign * v > sign * values[m] for v in values.values()) for m in values}


def _difference(
    column: Column, a: np.ndarray, b: np.ndarray, indices: np.ndarray
) -> stats.Interval:
    """Paired: statistic(a) - statistic(b) on the same resampled photos, signed so that > 0
    means `a` is better."""
    sign = 1.0 if column.higher_is_better else -1.0
    if column.statistic is None:
        return stats.paired(a, b, indices=indices).scaled(sign)
    stat = column.statistic
    both = np.stack([a, b], axis=1)
    return stats.bootstrap(both, lambda v: sign * (stat(v[:, 0]) - stat(v[:, 1])), indices=indices)


def summarise_column(column: Column, records: list, rows: list[str], indices: np.ndarray) -> dict:
    """One column over one photo set: every row's figure and interval, the ranks, and the
    glimpses' paired differences to the best other method and to random."""
    values = {m: np.array([column.per_photo(rec, m) for rec in records]) for m in rows}
    figures = {m: stats.bootstrap(values[m], column.statistic, indices=indices) for m in rows}
    rank = ranks({m: f.value for m, f in figures.items()}, column.higher_is_better)
    others = [m for m in rows if m not in OURS and m != RANDOM]
    best = min(others, key=lambda m: (rank[m], others.index(m)))
    return {
        "figures": figures,
        "ranks": rank,
        "best_other": best,
        "glimpses_minus_best_other": _difference(column, values["glimpses"], values[best], indices),
        "glimpses_minus_random": _difference(column, values["glimpses"], values[RANDOM], indices),
    }


def summarise_set(records: list, rows: list[str], columns: list[Column], resamples: int) -> dict:
    """Every column of one photo set, over one draw of resampled photos (paired rows)."""
    indices = stats.resample_indices(len(records), resamples)
    return {c.key: summarise_column(c, records, rows, indices) for c in columns}


def seconds_figures(records: list, rows: list[str], resamples: int) -> dict[str, stats.Interval]:
    """Median seconds per explanation of each method, with its interval."""
    indices = stats.resample_indices(len(records), resamples)
    return {
        m: stats.bootstrap(np.array([r["seconds"][m] for r in records]), np.median, indices=indices)
        for m in rows
        if m != RANDOM
    }


def judge_top1(records: list, resamples: int) -> dict[str, stats.Interval]:
    """Each judge's full-view top-1 against the labels (any row's scores hold its class)."""
    indices = stats.resample_indices(len(records), resamples)
    out = {}
    for judge in JUDGES:
        correct = [
            r["judged"][judge]["blur"]["glimpses"]["full_class"] == r["label"] for r in records
        ]
        out[judge] = stats.bootstrap(np.array(correct, float), indices=indices)
    classes = [
        r["judged"]["lite0"]["blur"]["glimpses"]["full_class"]
        == r["judged"]["lite2"]["blur"]["glimpses"]["full_class"]
        for r in records
    ]
    out["judges_agree"] = stats.bootstrap(np.array(classes, float), indices=indices)
    return out


def as_json(summary: dict) -> dict:
    """Intervals as {"value", "low", "high"}; the rest as it is."""
    out = {}
    for key, column in summary.items():
        out[key] = {
            "figures": {m: f.as_dict() for m, f in column["figures"].items()},
            "ranks": column["ranks"],
            "best_other": column["best_other"],
            "glimpses_minus_best_other": column["glimpses_minus_best_other"].as_dict(),
            "glimpses_minus_random": column["glimpses_minus_random"].as_dict(),
        }
    return out


def glimpse_ranks(summaries: dict[str, dict]) -> dict[str, dict[str, int]]:
    """The glimpses' rank on every column of every photo set, keyed by column: what a later run
    (after a model change) compares against."""
    return {
        name: {key: column["ranks"]["glimpses"] for key, column in summary.items()}
        for name, summary in summaries.items()
    }


# -- the run -------------------------------------------------------------------------------


def score_photo(model, judge, image, label, params, position, slow: bool, pixel: bool):
    """Explain one photo with its methods, judge every map; the record and the PIC task data."""
    names = rotated(METHODS if slow else FAST, position)
    results, took = explain_photo(model, image, params, names)
    view = results["grad_cam"].view
    area = geometry.coverage(results["glimpses"].extras["boxes"])
    rankings = {m: results[m].ranking for m in METHODS if m in results}
    rankings[RANDOM] = np.random.default_rng((1, position)).random(view.shape[:2])
    judged = judge_photo(model, judge, view, rankings, area, seed=position)
    record = {"label": int(label), "area": area, "seconds": took, "judged": judged}
    if pixel:
        k = judged["lite0"]["blur"]["glimpses"]["full_class"]
        record["pixel"] = pixel_photo(model, view, rankings, k)
    return record, view, rankings


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--limit", type=int, default=200, help="photos (glimpses and cheap methods)")
    ap.add_argument("--slow-limit", type=int, default=64, help="photos every method runs on")
    ap.add_argument("--pic-limit", type=int, default=16, help="photos PIC runs on (the first)")
    ap.add_argument("--workers", type=int, default=2, help="processes for PIC")
    ap.add_argument("--resamples", type=int, default=stats.RESAMPLES, help="bootstrap draws")
    ap.add_argument(
        "--model-name",
        default="saccader",
        help="the export under --model-dir whose glimpses are scored (e.g. saccader-fast);"
        " results go to faithfulness_<name>.* unless it is the default",
    )
    args = ap.parse_args()
    started = time.monotonic()

    images, labels, names = load_photos(args.images, limit=args.limit)
    slow_limit = min(args.slow_limit, len(images))
    pic_limit = min(args.pic_limit, slow_limit)
    order = run_order(len(images), pic_limit, slow_limit)
    model_path = args.model_dir / args.model_name / "1"
    model = offline_model(model_path)
    judge = Lite2Judge()
    params = {m: ExplainParameters(method=m) for m in METHODS}
    explain_photo(model, images[0], params, METHODS)  # trace every signature once

    records, pic_tasks = [], []
    for position, i in enumerate(tqdm(order)):
        slow = position < slow_limit
        record, view, rankings = score_photo(
            model, judge, images[i], labels[i], params, position, slow, pixel=slow
        )
        records.append(record)
        if position < pic_limit:
            pic_tasks.append(
                (position, view, {m: r.astype(np.float32) for m, r in rankings.items()})
            )
    reference = judge.reference_logits([images[i] for i in order]).argmax(axis=1)
    del model, judge
    explained = time.monotonic() - started
    pic_curves, skipped = run_pic(model_path, pic_tasks, args.workers)

    sets = {"all_methods": records[:slow_limit], "fast_methods": records}
    summaries = {
        name: summarise_set(sets[name], rows, equal_area_columns(), args.resamples)
        for name, rows in SETS.items()
    }
    summaries["all_methods"] |= summarise_set(
        sets["all_methods"], SETS["all_methods"], PIXEL_COLUMNS, args.resamples
    )
    curve_x = pic_curves[0]["glimpses"]["x"] if pic_curves else np.linspace(0, 1, 1001)
    if pic_curves:
        summaries["all_methods"] |= summarise_set(
            pic_curves, SETS["all_methods"], pic_columns(curve_x), args.resamples
        )
    seconds = {
        name: seconds_figures(sets[name], rows, args.resamples) for name, rows in SETS.items()
    }
    top1 = {name: judge_top1(sets[name], args.resamples) for name in SETS}
    ordered_labels = np.array([labels[i] for i in order])
    top1["fast_methods"]["lite2_reference"] = stats.bootstrap(
        (reference == ordered_labels).astype(float)
    )
    area = stats.bootstrap(np.array([r["area"] for r in records]))
    minutes = (time.monotonic() - started) / 60.0
    run = {
        "photos": len(records),
        "slow_photos": slow_limit,
        "pic_tried": len(pic_tasks),
        "pic_used": len(pic_curves),
        "pic_skipped_because": skipped,
        "minutes": round(minutes, 1),
        "minutes_before_pic": round(explained / 60.0, 1),
        "resamples": args.resamples,
    }
    checks = target_checks(summaries["all_methods"])
    md = render(summaries, seconds, top1, area, run, checks)
    stem = "faithfulness" if args.model_name == "saccader" else f"faithfulness_{args.model_name}"
    if args.model_name != "saccader":
        md = md.replace(
            "# Faithfulness and cost of explanations",
            f"# Faithfulness and cost of explanations, glimpses of `{args.model_name}`",
            1,
        )
    write_report(
        args.out,
        stem,
        {
            "environment": environment(),
            "run": run,
            "photos_in_run_order": [names[i] for i in order],
            "photo_sets": {
                name: {"photos": len(sets[name]), "rows": rows} for name, rows in SETS.items()
            },
            "judges": {
                "lite0": "the model explained (Lite0's full-image classifier), on its own class",
                "lite2": f"{JUDGE_NAME}: the 224 view resized to 260 bilinear, on its own class",
                "top1": {n: {j: f.as_dict() for j, f in t.items()} for n, t in top1.items()},
            },
            "removals": {
                "blur": {"sigma_px": faithfulness.BLUR_SIGMA},
                "road": {
                    "noise_std": road.ROAD_NOISE,
                    "weights": "1/6 direct, 1/12 diagonal",
                },
            },
            "bootstrap": {
                "method": "percentile, over photos, one draw per photo set (paired rows)",
                "resamples": args.resamples,
                "level": stats.LEVEL,
                "seed": stats.SEED,
            },
            "mean_area": area.as_dict(),
            "glimpses_rank": glimpse_ranks(summaries),
            "results": {name: as_json(s) for name, s in summaries.items()},
            "seconds_per_explanation": {
                n: {m: f.as_dict() for m, f in s.items()} for n, s in seconds.items()
            },
            "pic": {
                "thresholds": PIC_THRESHOLDS,
                # The median (SIC) and mean (AIC) curves at 51 points of the entropy axis.
                "curve_x": _every(curve_x),
                "sic_curves": pic_curves_json(pic_curves, "sic", np.median),
                "aic_curves": pic_curves_json(pic_curves, "aic", np.mean),
            },
            "checks": checks,
        },
        md,
    )
    plot(summaries["all_methods"], pic_curves, curve_x, args.out / f"{stem}.png")


def pic_curves_json(curves: list[dict], key: str, aggregate: Callable) -> dict[str, list[float]]:
    if not curves:
        return {}
    return {m: _every(aggregate([c[m][key] for c in curves], axis=0)) for m in curves[0]}


def _every(values, points: int = 51) -> list[float]:
    """`points` evenly spaced samples of a curve (saliency gives 1001), rounded: the JSON
    keeps the curve's shape without a megabyte of digits."""
    values = np.asarray(values, float)
    index = np.linspace(0, len(values) - 1, points).round().astype(int)
    return [round(float(v), 4) for v in values[index]]


def target_checks(summary: dict) -> dict:
    """The issue's targets on the self-judged blur columns of the all-methods photos (as before),
    now with the paired intervals of the gaps."""
    suff = summary["lite0_blur_sufficiency_agreement"]
    nec = summary["lite0_blur_necessity_top1_drop"]
    checks = {
        "sufficiency_gap_to_best_other": -suff["glimpses_minus_best_other"].value,
        "necessity_gap_to_best_other": -nec["glimpses_minus_best_other"].value,
        "sufficiency_over_random": suff["glimpses_minus_random"].value,
        "necessity_over_random": nec["glimpses_minus_random"].value,
    }
    checks["within_2_points_of_best"] = (
        checks["sufficiency_gap_to_best_other"] <= 0.02
        and checks["necessity_gap_to_best_other"] <= 0.02
    )
    checks["20_points_over_random"] = (
        checks["sufficiency_over_random"] >= 0.20 and checks["necessity_over_random"] >= 0.20
    )
    return checks


# -- the report ----------------------------------------------------------------------------


def pct(f: stats.Interval) -> str:
    """A fraction as percent (or points), with its interval."""
    return f"{100 * f.value:.1f} [{100 * f.low:.1f}, {100 * f.high:.1f}]"


def prob(f: stats.Interval) -> str:
    return f"{f.value:.3f} [{f.low:.2f}, {f.high:.2f}]"


def ms(f: stats.Interval | None) -> str:
    return "-" if f is None else f"{1000 * f.value:.0f} [{1000 * f.low:.0f}, {1000 * f.high:.0f}]"


def signed_points(f: stats.Interval) -> str:
    return f"{100 * f.value:+.1f} [{100 * f.low:+.1f}, {100 * f.high:+.1f}]"


def signed(f: stats.Interval) -> str:
    return f"{f.value:+.3f} [{f.low:+.2f}, {f.high:+.2f}]"


def ranked(summary: dict, key: str, m: str, fmt: Callable[[stats.Interval], str]) -> str:
    column = summary[key]
    return f"{fmt(column['figures'][m])} (#{column['ranks'][m]})"


def equal_area_table(summary: dict, rows: list[str], judge: str, removal: str, seconds=None) -> str:
    """One judge and one removal: every figure of every row."""
    p = f"{judge}_{removal}_"
    header = [
        "method",
        "sufficiency: prediction kept %",
        "class prob. kept",
        "necessity: top-1 drop, points",
        "prediction changed %",
        "class prob. lost",
    ]
    body = [
        [
            m,
            ranked(summary, p + "sufficiency_agreement", m, pct),
            ranked(summary, p + "sufficiency_probability", m, prob),
            ranked(summary, p + "necessity_top1_drop", m, pct),
            ranked(summary, p + "necessity_changed", m, pct),
            ranked(summary, p + "necessity_probability_drop", m, prob),
        ]
        for m in rows
    ]
    if seconds is not None:
        header.append("ms / explanation")
        for line, m in zip(body, rows, strict=True):
            line.append(ms(seconds.get(m)))
    return markdown_table(header, body)


def headline_table(summaries: dict) -> str:
    """The glimpses' rank and paired gap to the best other method, column by column."""
    rows = []
    for judge, judge_name in JUDGES.items():
        for removal, removal_name in REMOVALS.items():
            for figure in HEADLINE:
                key = f"{judge}_{removal}_{figure}"
                cells = [f"{judge_name}, {removal_name}: {HEADLINE[figure]}"]
                for name, set_rows in SETS.items():
                    c = summaries[name][key]
                    gap = signed_points(c["glimpses_minus_best_other"])
                    cells += [
                        f"#{c['ranks']['glimpses']} of {len(set_rows)}",
                        f"{gap} vs {c['best_other']}",
                        signed_points(c["glimpses_minus_random"]),
                    ]
                rows.append(cells)
    n_all, n_fast = len(SETS["all_methods"]), len(SETS["fast_methods"])
    header = ["column", f"rank ({n_all} rows)", "glimpses - best other, points (paired)",
              "glimpses - random", f"rank ({n_fast} rows, cheap methods)",
              "glimpses - best cheap other", "glimpses - random"]  # fmt: skip
    return markdown_table(header, rows)


def other_table(summary: dict, rows: list[str]) -> str:
    """PIC and the pixel curves, Lite0 only."""
    keys = [("lite0_pic_sic_auc", "SIC AUC (higher better)"),
            ("lite0_pic_aic_auc", "AIC AUC (higher better)"),
            ("lite0_pixel_deletion_auc", "pixel deletion AUC (lower better)"),
            ("lite0_pixel_insertion_auc", "pixel insertion AUC (higher better)")]  # fmt: skip
    keys = [(k, title) for k, title in keys if k in summary]
    body = [[m] + [ranked(summary, k, m, prob) for k, _ in keys] for m in rows]
    gaps = [
        ["glimpses - best other (paired)"]
        + [
            f"{signed(summary[k]['glimpses_minus_best_other'])} vs {summary[k]['best_other']}"
            for k, _ in keys
        ]  # fmt: skip
    ]
    return markdown_table(["method"] + [title for _, title in keys], body + gaps)


def render(summaries, seconds, top1, area, run, checks) -> str:
    n_all, n_fast = run["slow_photos"], run["photos"]
    t_all, t_fast = top1["all_methods"], top1["fast_methods"]
    c = checks
    lines = [
        f"# Faithfulness and cost of explanations ({n_fast} photos; every method on {n_all})",
        "",
        f"{n_fast} photos spread over the classes: the glimpses, SAG, the cheap methods and a"
        f" random ranking run on all of them, the slow methods (XRAI, integrated gradients, Blur"
        f" IG, SmoothGrad) on {n_all} of them, also spread over the classes. Equal area: each"
        f" photo's 8x8 cells covering as much of the view as its 6 glimpses (mean"
        f" {pct(area)}%), ranked by each map; sufficiency removes the rest, necessity removes"
        " those cells. Two removals: a Gaussian blur"
        f" ({faithfulness.BLUR_SIGMA:g} px), and ROAD's noisy linear imputation (each removed"
        " pixel the weighted mean of its 8 neighbours, solved for all at once, plus noise of std"
        f" {road.ROAD_NOISE:.2f} on 0..255; Rong et al. 2022), which leaves no outline of"
        " the removed cells. Two judges, each scoring the class it predicts itself on the full"
        " view: Lite0, the model explained (self-judging), and EfficientNet-Lite2, which never"
        " saw the explanations (the same 224 view, after removal, resized to its 260 px"
        " bilinearly).",
        "",
        f"Full-view top-1 on the {n_fast} photos: Lite0 {pct(t_fast['lite0'])}%, Lite2"
        f" {pct(t_fast['lite2'])}%; they predict the same class on {pct(t_fast['judges_agree'])}%"
        f" (on the {n_all}: Lite0 {pct(t_all['lite0'])}%, Lite2 {pct(t_all['lite2'])}%)."
        f" Lite2 on its own reference preprocessing (a 260 crop of the photo, not the view):"
        f" {pct(t_fast['lite2_reference'])}%.",
        "",
        "Every figure: value [95% percentile-bootstrap interval over photos, "
        f"{run['resamples']} resamples, seeded]; one draw of photos per table, so differences"
        " between rows are paired. Ranks (#, 1 = best, ties share) are among the rows of the"
        " table. Timings: medians, JPEG bytes to map, batch 1, in the same run."
        f" The run took {run['minutes']:.0f} minutes on this machine"
        f" ({run['minutes_before_pic']:.0f} before PIC).",
        "",
        "## The glimpses' rank and their gap to the best other method",
        "",
        f"Left: every method on the {n_all} photos; right: the cheap methods on all {n_fast}."
        " Gaps are glimpses minus the best other method (by this column's figure, SAG left out:"
        " it is the glimpses' own), paired over the same resampled photos; > 0 means the"
        " glimpses do better.",
        "",
        headline_table(summaries),
        "",
        f"- targets (Lite0, blur, {n_all} photos): glimpses vs the best other method:"
        f" sufficiency {100 * -c['sufficiency_gap_to_best_other']:+.1f} points, necessity"
        f" {100 * -c['necessity_gap_to_best_other']:+.1f} points (target: within 2); vs random:"
        f" sufficiency {100 * c['sufficiency_over_random']:+.1f}, necessity"
        f" {100 * c['necessity_over_random']:+.1f} points (target: >= +20)",
    ]
    for name, title in (
        ("all_methods", f"Every method on the same {n_all} photos"),
        ("fast_methods", f"The glimpses, SAG and the cheap methods on all {n_fast} photos"),
    ):
        lines += ["", f"## {title}"]
        first = True
        for judge, judge_name in JUDGES.items():
            for removal, removal_name in REMOVALS.items():
                lines += ["", f"### Judge {judge_name}, removal by {removal_name}", ""]
                secs = seconds[name] if first else None
                lines.append(equal_area_table(summaries[name], SETS[name], judge, removal, secs))
                first = False
    lines += [
        "",
        "## PIC (XRAI paper) and pixel-level deletion/insertion (judge: Lite0)",
        "",
        f"PIC on {run['pic_used']} of the first {run['pic_tried']} photos only (each costs"
        " minutes; the others fail PIC's own filters: confidence below 80%, or a fully blurred"
        " image no less informative); its intervals resample whole curves. Pixel"
        f" deletion/insertion on the {n_all} photos, grey single pixels ({PIXEL_STEPS} steps):"
        " a metric that rewards scattered maps, shown for comparison only.",
        "",
        other_table(summaries["all_methods"], SETS["all_methods"]),
    ]
    return "\n".join(lines)


def plot(summary: dict, pic_curves: list[dict], curve_x: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = SETS["all_methods"]
    fig, axes = plt.subplots(1, 3, figsize=(20, 6))
    y = np.arange(len(rows))
    combos = [(j, r) for j in JUDGES for r in REMOVALS]
    height = 0.8 / len(combos)
    for ax, figure, title in (
        (axes[0], "sufficiency_agreement", "Sufficiency at equal area: prediction kept (%)"),
        (axes[1], "necessity_top1_drop", "Necessity at equal area: top-1 drop (points)"),
    ):
        for n, (judge, removal) in enumerate(combos):
            figures = summary[f"{judge}_{removal}_{figure}"]["figures"]
            value = np.array([100 * figures[m].value for m in rows])
            low = value - np.array([100 * figures[m].low for m in rows])
            high = np.array([100 * figures[m].high for m in rows]) - value
            ax.barh(y + (n - 1.5) * height, value, height, xerr=[low, high], capsize=1.5,
                    label=f"{JUDGES[judge]}, {REMOVALS[removal]}")  # fmt: skip
        ax.set_yticks(y, rows, fontsize=8)
        for tick in ax.get_yticklabels():
            tick.set_color("tab:red" if tick.get_text() in OURS else "black")
        ax.invert_yaxis()
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7)
    for m in rows if pic_curves else []:
        curve = np.median([c[m]["sic"] for c in pic_curves], axis=0)
        style = "-" if m in OURS else ":" if m == RANDOM else "--"
        auc = summary["lite0_pic_sic_auc"]["figures"][m].value
        axes[2].plot(curve_x, curve, style, label=f"{m} ({auc:.2f})")
    axes[2].set_xlabel("normalised estimation of entropy")
    axes[2].set_ylabel("normalised softmax")
    axes[2].set_title("Softmax information curve (PIC, median; Lite0)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
