"""The explained prediction's cost / accuracy frontier: where-pass resolution x canvas size.

    python -m bench.frontier --model-dir models --images ../shared/data/imagenet-sample

An explained prediction is two backbone passes: the where pass over the 224 view (its class
activation map places the glimpses) and the what pass over a canvas of the glimpses, cut from
the 448 view. This measures, in one run, what cheaper passes cost in accuracy, so a reader sees
why the default sits where it does. Each point is the exported serving graph itself
(model_export's ExportModule, built in memory, not saved) with two settings changed:
- the where pass runs on the view resampled (area) to R px (SaccaderConfig.where_size), so its
  map has R/32 cells a side;
- the what canvas is C px (SaccaderConfig.canvas_size).
Plain is the default model's `classify` graph (the 224 view, decode included), as bench.cost
measures it. Per point:
- explained / plain at batch 1 and 8: medians of calls that alternate, every point's call
  right after the plain one in each round, so the machine's drift hits them alike;
- glimpse-only top-1 at T = 1, 3, 6 on every photo, its ratio to the full-image top-1 at T=6,
  distinct glimpses (IoU < 0.3 with every earlier one) and new pixels per glimpse at T=6;
- whether it meets the issue's bars: <= 1.3x at both batch sizes, >= 0.93x, >= 5 distinct of 6,
  top-1 rising with T.
Then the default path's parts at batch 1 and 8 (decode and views, the where pass, the cell, the
canvas, the what pass, the annotated picture), each timed alone: where an explanation's time goes.
Writes frontier.json and frontier.md under --out.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from bench.accuracy import glimpse_stats
from bench.common import (
    arguments,
    environment,
    int_list,
    load_photos,
    markdown_table,
    option_settings,
    write_report,
)
from model_export import annotate, preprocessing
from model_export.config import VIEW_SIZE, SaccaderConfig
from model_export.saccader import Saccader, glimpse_canvas, saccader_cell, seen_pixels
from model_export.signatures import ExportModule, build

BATCH = 16  # accuracy runs
STEPS = (1, 3, 6)
BARS = {"ratio": 1.3, "of_full": 0.93, "distinct": 5.0}


@dataclass
class Point:
    where: int
    canvas: int
    module: ExportModule

    @property
    def name(self) -> str:
        return f"where {self.where} / canvas {self.canvas}"


def modules(base: Saccader, assets: Path, wheres: list[int], canvases: list[int]) -> list[Point]:
    labels, info = assets / "labels.tsv", assets / "model_info.json"
    points = []
    for w in wheres:
        for c in canvases:
            cfg = replace(base.cfg, where_size=w, canvas_size=c)
            model = Saccader(base.backbone, base.head, cfg)
            points.append(Point(w, c, ExportModule(model, labels, info)))
    return points


def accuracy(point: Point, images: list[bytes], labels: np.ndarray) -> dict:
    """Top-1 at each T, and the glimpses' distinctness at the largest."""
    fn = point.module.serving_options
    top1, boxes = {}, None
    for steps in STEPS:
        classes, found = [], []
        for i in range(0, len(images), BATCH):
            b = tf.constant(images[i : i + BATCH])
            n = tf.shape(b)[0]
            out = fn(b, tf.fill([n], steps), tf.fill([n], 1))
            classes.append(out["classes"].numpy()[:, 0])
            found.append(out["glimpse_boxes"].numpy())
        top1[steps] = float((np.concatenate(classes) == labels).mean())
        boxes = np.concatenate(found)
    return {"top1": top1, **glimpse_stats(boxes)}


def timings(plain, points: list[Point], images: list[bytes], batch: int, repeats: int) -> dict:
    """Medians of alternating calls, ms per call: plain, then every point, each round."""
    inputs = [
        tf.constant([images[(i * batch + j) % len(images)] for j in range(batch)])
        for i in range(repeats)
    ]
    calls = {"plain": plain} | {p.name: p.module.serving_default for p in points}
    for fn in calls.values():  # trace and warm up
        for x in inputs[:2]:
            fn(x)
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for x in tqdm(inputs, desc=f"timing batch {batch}", leave=False):
        for name, fn in calls.items():
            start = time.perf_counter()
            _ = {k: v.numpy() for k, v in fn(x).items()}
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) * 1000 for name, s in seconds.items()}


def parts(model: Saccader, images: list[bytes], batch: int, repeats: int) -> dict[str, float]:
    """The default explained path cut at its seams, each part timed alone (ms per call)."""
    cfg = model.cfg
    b = tf.constant([images[j % len(images)] for j in range(batch)])
    views = tf.function(lambda x: preprocessing.batch_views(x, cfg.hires_size))
    plain_view = tf.function(lambda x: preprocessing.batch_views(x, None)["view"])
    v = views(b)

    @tf.function
    def where(view):
        return model.where(view)

    @tf.function
    def cell(loc):
        full = tf.reduce_mean(loc, axis=[1, 2])
        predicted = tf.argmax(full, axis=1, output_type=tf.int32)
        evidence = model.evidence(cfg.policy, loc, predicted, v["view"], b)
        return saccader_cell(evidence, cfg.default_glimpses, cfg)

    loc = where(v["view"])
    boxes = cell(loc)
    valid = tf.ones(tf.shape(boxes)[:2], tf.bool)
    canvas_fn = tf.function(lambda h, bx: glimpse_canvas(h, bx, valid, cfg.canvas_size))
    canvas, keep = canvas_fn(v["hires"], boxes)
    what = tf.function(lambda h, bx: model.what(h, bx, valid)["logits"])

    @tf.function
    def picture(view, bx):
        return annotate.annotate(view, bx, valid, seen_pixels(bx, valid), cfg.annotated_format)

    steps = {
        "decode, 224 view": lambda: plain_view(b),
        "decode, 224 and 448 views": lambda: views(b),
        "where pass (backbone, 224)": lambda: where(v["view"]),
        "cell (6 glimpses)": lambda: cell(loc),
        "canvas": lambda: canvas_fn(v["hires"], boxes),
        "what pass (canvas + backbone)": lambda: what(v["hires"], boxes),
        f"annotated picture ({cfg.annotated_format})": lambda: picture(v["view"], boxes),
    }
    for fn in steps.values():
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            start = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), fn())
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) * 1000 for name, s in seconds.items()}


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--wheres", type=int_list, default=[224, 160, 128, 96])
    ap.add_argument("--canvases", type=int_list, default=[224, 192, 160])
    ap.add_argument("--repeats", type=int, default=30, help="timed rounds per batch size")
    ap.add_argument("--limit", type=int, default=None, help="photos for accuracy (default all)")
    args = ap.parse_args()

    images, labels, _ = load_photos(args.images, limit=args.limit)
    base = build(SaccaderConfig())
    assets = args.model_dir / "saccader" / "1" / "assets"
    default = modules(base, assets, [VIEW_SIZE], [base.cfg.canvas_size])[0]
    points = modules(base, assets, args.wheres, args.canvases)
    plain = default.module.classify

    full = []
    for i in range(0, len(images), BATCH):
        full.append(plain(tf.constant(images[i : i + BATCH]))["classes"].numpy()[:, 0])
    full_top1 = float((np.concatenate(full) == labels).mean())

    results = {p.name: {"where": p.where, "canvas": p.canvas} for p in points}
    for p in tqdm(points, desc="accuracy"):
        results[p.name] |= accuracy(p, images, labels)
    costs = {}
    for batch in (1, 8):
        ms = timings(plain, points, images, batch, args.repeats)
        costs[str(batch)] = {"plain_ms": ms["plain"] / batch}
        for p in points:
            results[p.name][f"ratio_b{batch}"] = ms[p.name] / ms["plain"]
            results[p.name][f"ms_per_image_b{batch}"] = ms[p.name] / batch
    for r in results.values():
        r["of_full"] = r["top1"][STEPS[-1]] / full_top1
        curve = [r["top1"][s] for s in STEPS]
        rising = all(a <= b for a, b in zip(curve, curve[1:], strict=False))
        r["rising"] = rising
        r["meets"] = (
            max(r["ratio_b1"], r["ratio_b8"]) <= BARS["ratio"]
            and r["of_full"] >= BARS["of_full"]
            and r["distinct"] >= BARS["distinct"]
            and rising
        )
    breakdown = {str(b): parts(base, images, b, args.repeats) for b in (1, 8)}
    data = {
        "environment": environment(),
        "photos": len(images),
        "full_image_top1": full_top1,
        "bars": BARS,
        "plain": costs,
        "points": results,
        "parts_ms_per_call": breakdown,
        "option": option_settings(args.model_dir),
    }
    write_report(args.out, "frontier", data, render(data))


def render(d: dict) -> str:
    rows = []
    for r in d["points"].values():
        t = r["top1"]
        rows.append([
            r["where"], r["canvas"], f"{r['ratio_b1']:.2f}x", f"{r['ratio_b8']:.2f}x",
            " / ".join(f"{t[s]:.3f}" for s in STEPS), f"{r['of_full']:.3f}",
            f"{r['distinct']:.2f}", f"{r['new_pixels']:.2f}", "yes" if r["meets"] else "no",
        ])  # fmt: skip
    parts_rows = [
        [name, f"{ms:.2f}", f"{d['parts_ms_per_call']['8'][name] / 8:.2f}"]
        for name, ms in d["parts_ms_per_call"]["1"].items()
    ]
    plain = d["plain"]
    fast = d.get("option")
    cheap = [r for r in d["points"].values() if max(r["ratio_b1"], r["ratio_b8"]) <= BARS["ratio"]]
    best = max(cheap, key=lambda r: r["of_full"], default=None)
    option = (
        f"The most accurate point within {BARS['ratio']}x at both batch sizes: where"
        f" {best['where']} / canvas {best['canvas']}, {best['ratio_b1']:.2f}x / "
        f"{best['ratio_b8']:.2f}x, {best['of_full']:.3f} of the full image's top-1"
        + (
            "; `make export-fast` has not been run here."
            if not fast
            else " (`make export-fast` exports it as `saccader-fast`)."
            if (best["where"], best["canvas"]) == (fast["where_size"], fast["canvas_size"])
            else f"; `make export-fast` exported where {fast['where_size']} / canvas"
            f" {fast['canvas_size']} instead."
        )
        if best
        else f"No point is within {BARS['ratio']}x at both batch sizes."
    )
    return "\n".join([
        f"# Explained prediction: cost / accuracy frontier ({d['photos']} photos, one run)",
        "",
        f"Plain (`classify`, the 224 view, decode included): {plain['1']['plain_ms']:.1f} ms at"
        f" batch 1, {plain['8']['plain_ms']:.1f} ms per image at batch 8; full-image top-1"
        f" {d['full_image_top1']:.3f}. Bars: <= {BARS['ratio']}x at batch 1 and 8, glimpse"
        f" top-1 >= {BARS['of_full']}x the full image's, >= {BARS['distinct']:g} distinct"
        " glimpses of 6, top-1 rising with T.",
        "",
        markdown_table(
            ["where px", "canvas px", "explained / plain, batch 1", "batch 8",
             f"top-1 at T = {', '.join(map(str, STEPS))}", "T=6 / full image",
             "distinct of 6", "new pixels per glimpse", "meets the bars"],
            rows,
        ),
        "",
        option,
        "",
        "The default path's parts, each timed alone (ms; medians):",
        "",
        markdown_table(["part", "batch 1, per call", "batch 8, per image"], parts_rows),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
