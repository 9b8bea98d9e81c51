"""Training on your own classes: time, and accuracy on photos of classes it never saw.

    python -m bench.training --images ../shared/data/imagenet-sample \
        --import-file ../shared/data/superclasses-train.csv --out bench/results

1. The example: `glimpse train` on the import file (8 coarse classes over 158 sample photos)
   with an empty feature cache, timed.
2. Photos of classes it never saw. Every sample photo is of its own ImageNet class, so any
   photo left out of training is of an unseen class of its coarse class: 5-fold
   cross-validation over the import file (folds stratified by coarse label, seeded; each fold
   the test split of one training run through `glimpse train`, the rest training and one in
   nine validation) judges all 158 photos, plus the few other sample photos of the coarse
   classes (COARSE below: ImageNet's own index ranges) through the first run's exported
   `serving_options`. Reported: glimpse top-1 at T = 1, 2, 4, 6, full-image top-1, their
   ratio. Targets (issue: your own classes): glimpse top-1 >= 0.87, glimpses/full >= 0.95.
3. The 1000-photo case: the 500 sample photos and their mirror images (other bytes, so no
   cache hit) labelled by coarse class, "other" for the rest, trained with an empty cache, then
   again with another seed on the warm cache. Target: <= 180 s on 2 cores, extraction included.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import arguments, environment, footer, markdown_table, write_report

LAND_VEHICLES = [
    407, 408, 436, 444, 468, 511, 547, 555, 561, 565, 569, 573, 575, 586, 609, 627, 654, 656,
    661, 665, 670, 671, 675, 705, 717, 734, 751, 757, 779, 802, 803, 817, 820, 829, 847, 864,
    866, 867, 870, 874, 880,
]  # fmt: skip
COARSE: dict[str, list[int]] = {
    "bird": [*range(7, 25), *range(80, 101), *range(127, 147)],
    "cat": list(range(281, 294)),
    "dog": list(range(151, 269)),
    "fish": [*range(0, 7), *range(389, 398)],
    "insect": list(range(300, 327)),
    "primate": list(range(365, 385)),
    "reptile": list(range(33, 69)),
    "vehicle": LAND_VEHICLES,
}
GLIMPSES = (1, 2, 4, 6)


def coarse_of(class_index: int) -> str | None:
    return next((name for name, ids in COARSE.items() if class_index in ids), None)


def synset_index() -> dict[str, int]:
    from model_export.labels import imagenet_labels

    return {synset: i for i, (synset, _) in enumerate(imagenet_labels())}


def judge_photos(images: Path, import_file: Path) -> list[tuple[Path, str]]:
    """Sample photos of coarse classes the import file does not name, with their coarse label."""
    index = synset_index()
    used = {line.split(",")[-2].rsplit("/", 1)[-1] for line in import_file.read_text().split()}
    out = []
    for path in sorted(images.glob("*.JPEG")):
        label = coarse_of(index[path.name.split("_")[0]])
        if label and path.name not in used:
            out.append((path, label))
    return out


def judge(version: Path, photos: list[tuple[Path, str]]) -> dict:
    import tensorflow as tf

    fn = tf.saved_model.load(str(version)).signatures["serving_options"]
    truth = np.array([label for _, label in photos])
    answers: dict[str, list[str]] = {str(t): [] for t in GLIMPSES}
    full: list[str] = []
    for start in range(0, len(photos), 16):
        batch = tf.constant([p.read_bytes() for p, _ in photos[start : start + 16]])
        n = int(batch.shape[0])
        for t in GLIMPSES:
            out = fn(
                input_image_bytes=batch,
                num_glimpses=tf.fill([n], t),
                top_k=tf.fill([n], 1),
            )
            answers[str(t)] += [v.decode() for v in out["class_names"][:, 0].numpy()]
            if t == GLIMPSES[-1]:
                full += [v.decode() for v in out["full_image_name"].numpy()]
    top1 = {t: float(np.mean(np.array(a) == truth)) for t, a in answers.items()}
    full_top1 = float(np.mean(np.array(full) == truth))
    per_label = {
        label: {
            "photos": int(np.sum(truth == label)),
            "glimpses": float(np.mean(np.array(answers["6"])[truth == label] == label)),
            "full": float(np.mean(np.array(full)[truth == label] == label)),
        }
        for label in sorted(set(truth))
    }
    return {
        "photos": len(photos),
        "glimpse_top1": top1,
        "full_top1": full_top1,
        "ratio": top1["6"] / full_top1 if full_top1 else None,
        "per_label": per_label,
    }


def fold_files(import_file: Path, folder: Path, folds: int = 5, seed: int = 0) -> list[Path]:
    """Import files with ML_USE: fold f's photos are its test split; of the rest, one in nine
    (per label) validation, the others training."""
    import random

    rows = [line.rsplit(",", 1) for line in import_file.read_text().split()]
    base = import_file.parent
    by_label: dict[str, list[str]] = {}
    for uri, label in rows:
        by_label.setdefault(label, []).append(str((base / uri).resolve()))
    rng = random.Random(seed)
    assigned: list[tuple[str, str, int]] = []
    for label, uris in sorted(by_label.items()):
        rng.shuffle(uris)
        assigned += [(uri, label, i % folds) for i, uri in enumerate(uris)]
    files = []
    for f in range(folds):
        lines, k = [], 0
        for uri, label, fold in assigned:
            if fold == f:
                use = "test"
            else:
                use = "validation" if k % 9 == 8 else "training"
                k += 1
            lines.append(f"{use},{uri},{label}")
        path = folder / f"fold{f}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        files.append(path)
    return files


def cross_validate(files: list[Path], base: Path, cache: Path) -> dict:
    """Sum the folds' test hits (each photo is judged once, by the run that never saw it)."""
    hits: dict[str, float] = {}
    photos = 0
    per_label: dict[str, dict[str, float]] = {}
    for f, path in enumerate(files):
        report, _ = timed_train(path, base, cache, f"fold{f}")
        meta = report.evaluation["metadata"]
        n = meta["testPhotos"]
        photos += n
        for t, v in meta["glimpseTop1"].items():
            hits[t] = hits.get(t, 0.0) + v * n
        hits["full"] = hits.get("full", 0.0) + meta["fullImageTop1"] * n
        for row in meta["perLabel"]:
            entry = per_label.setdefault(row["displayName"], {"photos": 0, "hits": 0.0})
            entry["photos"] += row["testPhotos"]
            entry["hits"] += (row["recall"] or 0.0) * row["testPhotos"]
    top1 = {t: v / photos for t, v in hits.items() if t != "full"}
    full = hits["full"] / photos
    return {
        "photos": photos,
        "folds": len(files),
        "glimpse_top1": top1,
        "full_top1": full,
        "ratio": top1["6"] / full if full else None,
        "recall_by_label": {k: v["hits"] / v["photos"] for k, v in sorted(per_label.items())},
    }


def thousand_photos(images: Path, folder: Path) -> Path:
    """An import file of 1000 distinct photos: the samples and their mirror images."""
    from PIL import Image, ImageOps

    index = synset_index()
    (folder / "mirrored").mkdir(parents=True)
    lines = []
    for path in sorted(images.glob("*.JPEG")):
        label = coarse_of(index[path.name.split("_")[0]]) or "other"
        mirror = folder / "mirrored" / path.name
        ImageOps.mirror(Image.open(path).convert("RGB")).save(mirror, quality=92)
        lines += [f"{path.resolve()},{label}", f"{mirror},{label}"]
    out = folder / "thousand.csv"
    out.write_text("\n".join(lines) + "\n")
    return out


def timed_train(import_file: Path, base: Path, cache: Path, name: str, **kw):
    from model_export.training.trainer import TrainSpec, train

    spec = TrainSpec(
        import_file=str(import_file), model_name=name, model_base=base, cache_dir=cache, **kw
    )
    start = time.perf_counter()
    report = train(spec)
    return report, time.perf_counter() - start


def stage_row(title: str, report, seconds: float) -> list:
    s = report.seconds
    photos = sum(report.counts.values())
    return [
        title,
        photos,
        f"{seconds:.1f}",
        f"{s['view features']:.1f}",
        f"{s['canvas features']:.1f}",
        f"{s['head on views'] + s['head on views and glimpses']:.1f}",
        f"{s['evaluation']:.1f}",
        f"{s['export']:.1f}",
        f"{report.photos_per_second:.1f}",
        report.cached_photos,
    ]


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument(
        "--import-file",
        type=Path,
        help="Default: superclasses-train.csv beside the photo folder (../shared/data).",
    )
    ap.add_argument("--skip-thousand", action="store_true", help="Only the example and judge.")
    args = ap.parse_args()
    args.import_file = args.import_file or args.images.parent / "superclasses-train.csv"
    env = environment()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        example, example_s = timed_train(
            args.import_file, tmp / "models", tmp / "cache", "superclasses"
        )
        photos = judge_photos(args.images, args.import_file)
        judged = judge(example.path, photos)
        folds = cross_validate(
            fold_files(args.import_file, tmp / "folds"), tmp / "models", tmp / "cache"
        )
        rows = [stage_row("example (cold cache)", example, example_s)]
        data = {
            "environment": env,
            "example": {
                "seconds": example_s,
                "stages": example.seconds,
                "counts": example.counts,
                "own_test_split": example.evaluation["metadata"],
            },
            "unseen_classes_5_fold": folds,
            "other_sample_photos": judged,
        }
        if not args.skip_thousand:
            thousand = thousand_photos(args.images, tmp / "thousand")
            # A cache of its own: the example's photos must not make the cold run warm.
            cache = tmp / "cache-1000"
            cold, cold_s = timed_train(thousand, tmp / "models", cache, "thousand")
            warm, warm_s = timed_train(
                thousand, tmp / "models", cache, "thousand", version=2, seed=1
            )
            rows += [
                stage_row("1000 photos (cold cache)", cold, cold_s),
                stage_row("1000 photos (warm cache, seed 1)", warm, warm_s),
            ]
            data["thousand"] = {
                "cold": {"seconds": cold_s, "stages": cold.seconds, "pps": cold.photos_per_second},
                "warm": {"seconds": warm_s, "stages": warm.seconds},
                "own_test_split": cold.evaluation["metadata"],
            }
    own = example.evaluation["metadata"]
    md = [
        "# Training on your own classes",
        "",
        markdown_table(
            [
                "run",
                "photos",
                "total s",
                "view features s",
                "glimpse features s",
                "head fits s",
                "evaluation s",
                "export s",
                "photos/s extracted",
                "from cache",
            ],
            rows,
        ),  # fmt: skip
        "",
        f"Photos of ImageNet classes the head never saw, in the same 8 coarse classes: all"
        f" {folds['photos']} photos of the import file by {folds['folds']}-fold"
        f" cross-validation, and the {judged['photos']} other sample photos of these coarse"
        " classes (targets: glimpse top-1 >= 0.87, glimpses/full >= 0.95):",
        "",
        markdown_table(
            [
                "answer",
                f"{folds['folds']}-fold, {folds['photos']} photos",
                f"other sample photos ({judged['photos']})",
                "example's own test split",
            ],
            [
                *[
                    [
                        f"glimpses T={t}",
                        f"{folds['glimpse_top1'][str(t)]:.3f}",
                        f"{judged['glimpse_top1'][str(t)]:.3f}",
                        f"{own['glimpseTop1'][str(t)]:.3f}",
                    ]
                    for t in GLIMPSES
                ],
                [
                    "full image",
                    f"{folds['full_top1']:.3f}",
                    f"{judged['full_top1']:.3f}",
                    f"{own['fullImageTop1']:.3f}",
                ],
                [
                    "glimpses / full",
                    f"{folds['ratio']:.3f}",
                    f"{judged['ratio'] or 0:.3f}",
                    f"{own['glimpseOverFull']}",
                ],
            ],
        ),  # fmt: skip
        "",
        "Recall by coarse class (glimpses, T=6, 5-fold): "
        + ", ".join(f"{k} {v:.2f}" for k, v in folds["recall_by_label"].items()),
        "",
        footer(env),
    ]
    write_report(args.out, "training", data, "\n".join(md))


if __name__ == "__main__":
    main()
