"""Accuracy of the exported model: full image vs glimpses only, per policy, setting and T.

    python -m bench.accuracy --model-dir models --images ../shared/data/imagenet-sample

Writes accuracy.json, accuracy.md and accuracy.png under --out:
- full-image top-1/top-5 (the `classify` signature);
- for every policy (the paper's Figure 3a and 5a) and T = 1, 2, 4, 6, 8, 12, 16: glimpse-only
  top-1/top-5, mean union coverage, and how much each glimpse adds: distinct glimpses (IoU
  < 0.3 with every earlier one), mean fraction of new pixels per glimpse after the first,
  mean largest IoU with an earlier glimpse; each run through the exported `serving_options`;
- the trade-off of the cell's settings (glimpse size x focus layout x coverage x accuracy x
  distinctness), each exported once under <model_dir>/variants/;
- the occlusion test of the paper's Figure 5b: black out the T=6 glimpses of each policy in the
  original photo and classify the whole photo; compare with random patches of equal area.
Exports under <model_dir>/baselines and /variants are redone when their settings or
signatures differ from what this code would export.
The sample photos may overlap the backbone's training data: compare settings, do not quote the
numbers as ImageNet-val accuracy.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image
from tqdm import tqdm

from bench.common import (
    arguments,
    environment,
    load_model,
    load_photos,
    markdown_table,
    write_report,
)
from model_export.config import POLICIES, VIEW_SIZE, SaccaderConfig
from service import geometry

BATCH = 16
DEFAULT = SaccaderConfig()
# The trade-off curve: the cell's settings around the default, at the same T values.
# Names carry no commas: --variants is a comma-separated list of them.
VARIANTS: dict[str, SaccaderConfig] = {
    "64px 2x3 focus (default)": DEFAULT,
    "64px no focus (scattered)": SaccaderConfig(tile_rows=1, tile_cols=1),
    "48px 2x3 focus": SaccaderConfig(glimpse_size=48, tile_row_step=40, tile_col_step=32),
    "56px 2x3 focus": SaccaderConfig(glimpse_size=56, tile_row_step=48, tile_col_step=40),
    "80px 2x2 focus (over budget)": SaccaderConfig(
        glimpse_size=80, tile_rows=2, tile_cols=2, tile_row_step=64, tile_col_step=64,
        max_coverage=0.5,
    ),
    "64px 2x3 focus canvas 192": SaccaderConfig(canvas_size=192),
}  # fmt: skip


def exported(model_dir: Path, folder: str, name: str, cfg: SaccaderConfig):
    """The default export for the default config; others exported once under `folder`."""
    from model_export.signatures import build, export, stale_reason

    if cfg == DEFAULT:
        return load_model(model_dir)
    base = model_dir / folder / _slug(name)
    target = base / "saccader" / "1"
    if (target / "saved_model.pb").exists() and stale_reason(target, cfg):
        import shutil

        shutil.rmtree(target)
    if not (target / "saved_model.pb").exists():
        export(build(cfg), base)
    return load_model(base)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def run_policy(sm, images: list[bytes], steps: int, desc: str) -> dict[str, np.ndarray]:
    fn = sm.signatures["serving_options"]
    parts: dict[str, list[np.ndarray]] = {"classes": [], "coverage": [], "boxes": [], "crop": []}
    for i in tqdm(range(0, len(images), BATCH), desc=desc, leave=False):
        chunk = images[i : i + BATCH]
        n = len(chunk)
        out = fn(
            input_image_bytes=tf.constant(chunk),
            num_glimpses=tf.fill([n], steps),
            top_k=tf.fill([n], 5),
        )
        parts["classes"].append(out["classes"].numpy())
        parts["coverage"].append(out["coverage"].numpy())
        parts["boxes"].append(out["glimpse_boxes"].numpy())
        parts["crop"].append(out["crop_box"].numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def topk(classes: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    return float((classes[:, 0] == labels).mean()), float(
        (classes == labels[:, None]).any(1).mean()
    )


def glimpse_stats(boxes: np.ndarray) -> dict[str, float]:
    """What glimpse_quality.py measures, per photo, averaged: distinctness and new pixels."""
    distinct, new, max_iou = [], [], []
    for b in boxes:
        b = [tuple(x) for x in b if x[0] >= 0]
        distinct.append(geometry.distinct_count(b))
        if len(b) > 1:
            new.append(np.mean(geometry.new_pixel_fractions(b)[1:]))
            max_iou.append(np.mean(geometry.max_earlier_iou(b)))
    return {
        "distinct": float(np.mean(distinct)),
        "new_pixels": float(np.mean(new)) if new else 1.0,
        "max_iou": float(np.mean(max_iou)) if max_iou else 0.0,
    }


def evaluate(
    sm, images, labels, steps_list, desc: str, checkpoint: Path
) -> tuple[dict, dict[int, dict]]:
    """Every T for one export; the cells are also appended to `checkpoint`, so that a crash
    late in an hour-long run keeps what was measured (removed when the report is written)."""
    cells, runs = {}, {}
    for steps in steps_list:
        r = run_policy(sm, images, steps, f"{desc} T={steps}")
        t1, t5 = topk(r["classes"], labels)
        cells[str(steps)] = {
            "top1": t1,
            "top5": t5,
            "coverage": float(r["coverage"].mean()),
            "coverage_max": float(r["coverage"].max()),
            **glimpse_stats(r["boxes"]),
        }
        runs[steps] = r
    with checkpoint.open("a") as f:
        f.write(json.dumps({"what": desc, "cells": cells}) + "\n")
    return cells, runs


def classify(sm, images: list[bytes], desc: str) -> np.ndarray:
    fn = sm.signatures["classify"]
    out = []
    for i in tqdm(range(0, len(images), BATCH), desc=desc, leave=False):
        out.append(fn(input_image_bytes=tf.constant(images[i : i + BATCH]))["classes"].numpy())
    return np.concatenate(out)


def random_equal_area(boxes: np.ndarray, rng: np.random.Generator, tries: int = 64) -> np.ndarray:
    """Random glimpses of the same count and size whose union area is closest to the original's."""
    valid = boxes[boxes[:, 0] >= 0]
    size = int(valid[0, 2] - valid[0, 0])
    target = geometry.union_mask(valid).sum()
    best, best_gap = valid, None
    for _ in range(tries):
        tops = rng.integers(0, VIEW_SIZE - size + 1, size=(len(valid), 2)).astype(np.float32)
        cand = np.concatenate([tops, tops + size], axis=1)
        gap = abs(int(geometry.union_mask(cand).sum()) - int(target))
        if best_gap is None or gap < best_gap:
            best, best_gap = cand, gap
    return best


def occlude(image: bytes, boxes: np.ndarray, crop_box: np.ndarray) -> bytes:
    """Black out view-pixel boxes in the original photo (mapped through the crop box)."""
    pixels = np.array(Image.open(io.BytesIO(image)).convert("RGB"))
    top, left = crop_box[0], crop_box[1]
    scale = (crop_box[2] - crop_box[0]) / VIEW_SIZE
    for y0, x0, y1, x1 in boxes:
        if y0 < 0:
            continue
        pixels[
            int(np.floor(top + y0 * scale)) : int(np.ceil(top + y1 * scale)),
            int(np.floor(left + x0 * scale)) : int(np.ceil(left + x1 * scale)),
        ] = 0
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _cell(c: dict) -> str:
    return f"{c['top1'] * 100:.1f} / {c['top5'] * 100:.1f} ({c['coverage'] * 100:.0f}%)"


def _spread(c: dict) -> str:
    return f"{c['distinct']:.2f} / {c['new_pixels']:.2f} / {c['max_iou']:.2f}"


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--limit", type=int, default=None, help="use N photos spread over classes")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--variants", default=",".join(VARIANTS), help="'' for none")
    ap.add_argument("--glimpses", default="1,2,4,6,8,12,16")
    ap.add_argument("--occlusion-glimpses", type=int, default=6)
    args = ap.parse_args()

    images, labels, _ = load_photos(args.images, args.limit)
    policies = args.policies.split(",")
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out / "accuracy.partial.jsonl"
    checkpoint.unlink(missing_ok=True)
    steps_list = [int(t) for t in args.glimpses.split(",")]
    default = load_model(args.model_dir)
    full = classify(default, images, "full image")
    full1, full5 = topk(full, labels)

    results: dict[str, dict[str, dict[str, float]]] = {}
    occlusion_boxes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for policy in policies:
        cfg = SaccaderConfig(policy=policy)  # type: ignore[arg-type]
        sm = exported(args.model_dir, "baselines", policy, cfg)
        results[policy], runs = evaluate(sm, images, labels, steps_list, policy, checkpoint)
        if args.occlusion_glimpses in runs:
            r = runs[args.occlusion_glimpses]
            occlusion_boxes[policy] = (r["boxes"], r["crop"])
    tradeoff: dict[str, dict[str, dict[str, float]]] = {}
    for name in variants:
        if VARIANTS[name] == DEFAULT and DEFAULT.policy in results:
            tradeoff[name] = results[DEFAULT.policy]
            continue
        sm = exported(args.model_dir, "variants", name, VARIANTS[name])
        tradeoff[name], _ = evaluate(sm, images, labels, steps_list, name, checkpoint)

    occlusion: dict[str, float] = {"none": full1}
    rng = np.random.default_rng(0)
    for policy, (boxes, crops) in occlusion_boxes.items():
        occluded = [occlude(im, b, c) for im, b, c in zip(images, boxes, crops, strict=True)]
        occlusion[policy] = topk(classify(default, occluded, f"occlude {policy}"), labels)[0]
        if policy == DEFAULT.policy:
            rand = [random_equal_area(b, rng) for b in boxes]
            occluded = [occlude(im, b, c) for im, b, c in zip(images, rand, crops, strict=True)]
            occlusion["random, equal area"] = topk(
                classify(default, occluded, "occlude random equal area"), labels
            )[0]

    header = ["policy"] + [f"T={t}" for t in steps_list]
    md = [
        f"# Accuracy on {len(images)} photos from {args.images}",
        "",
        f"Full image (plain classification): top-1 {full1 * 100:.1f}, top-5 {full5 * 100:.1f}.",
        "",
        "Glimpse-only top-1 / top-5 (mean union coverage of the 224x224 view):",
        "",
        markdown_table(
            header,
            [[p] + [_cell(results[p][str(t)]) for t in steps_list] for p in policies],
        ),
        "",
        "What each glimpse adds: distinct glimpses (IoU < 0.3 with every earlier one) / mean"
        " fraction of new pixels per glimpse after the first / mean largest IoU with an earlier"
        " glimpse:",
        "",
        markdown_table(
            header,
            [[p] + [_spread(results[p][str(t)]) for t in steps_list] for p in policies],
        ),
    ]
    if tradeoff:
        md += [
            "",
            "Trade-off of the cell's settings (default policy): top-1 / top-5 (coverage), then"
            " distinct / new pixels / largest IoU, per T:",
            "",
            markdown_table(
                ["setting"] + [f"T={t}" for t in steps_list],
                [[n] + [_cell(tradeoff[n][str(t)]) for t in steps_list] for n in tradeoff]
                + [[f"{n}: spread"] + [_spread(tradeoff[n][str(t)]) for t in steps_list]
                   for n in tradeoff],
            ),
        ]  # fmt: skip
    md += [
        "",
        f"Occlusion (paper Fig. 5b): top-1 of the whole photo with the T={args.occlusion_glimpses}"
        " glimpses blacked out (lower = the glimpses held more of the evidence):",
        "",
        markdown_table(
            ["occluded", "top-1"], [[k, f"{v * 100:.1f}"] for k, v in occlusion.items()]
        ),
    ]
    summary = {}
    cam = results.get(DEFAULT.policy, {})
    if "6" in cam and "1" in cam:
        c = cam["6"]
        summary = {
            "ratio_to_full_t6": c["top1"] / full1,
            "t6_minus_t1": c["top1"] - cam["1"]["top1"],
            "rises_with_t": all(
                cam[str(a)]["top1"] <= cam[str(b)]["top1"]
                for a, b in zip(steps_list, steps_list[1:], strict=False)
                if b <= 6
            ),
        }
        if "random" in results:
            summary["policy_over_random_t1"] = cam["1"]["top1"] - results["random"]["1"]["top1"]
        md += [
            "",
            f"Default (cam, T=6): glimpse-only top-1 = {summary['ratio_to_full_t6']:.3f} x full"
            f" image; coverage {c['coverage']:.3f} (max {c['coverage_max']:.3f}); distinct"
            f" {c['distinct']:.2f} of 6; new pixels per glimpse {c['new_pixels']:.3f};"
            f" T6 - T1 = {100 * summary['t6_minus_t1']:.1f} points"
            + (
                f"; T=1 over random: {100 * summary['policy_over_random_t1']:+.1f} points."
                if "policy_over_random_t1" in summary
                else "."
            ),
        ]
    data = {
        "environment": environment(),
        "photos": len(images),
        "full_image": {"top1": full1, "top5": full5},
        "glimpses": results,
        "tradeoff": tradeoff,
        "occlusion": occlusion,
        "summary": summary,
    }
    write_report(args.out, "accuracy", data, "\n".join(md))
    checkpoint.unlink()
    plot(args.out / "accuracy.png", results, tradeoff, steps_list, full1, occlusion)


def plot(path: Path, results, tradeoff, steps_list, full1: float, occlusion) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(21, 4.4))
    for policy, cells in results.items():
        axes[0].plot(
            steps_list, [cells[str(t)]["top1"] * 100 for t in steps_list], "o-", label=policy
        )
    for name, cells in tradeoff.items():
        axes[1].plot(
            [cells[str(t)]["coverage"] * 100 for t in steps_list],
            [cells[str(t)]["top1"] * 100 for t in steps_list],
            "o-",
            label=name,
        )
        axes[2].plot(steps_list, [cells[str(t)]["distinct"] for t in steps_list], "o-", label=name)
    for ax in axes[:2]:
        ax.axhline(full1 * 100, color="k", ls="--", lw=1, label="full image")
        ax.axhline(full1 * 93, color="grey", ls=":", lw=1, label="0.93 x full image")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("glimpses T")
    axes[0].set_title("Glimpse-only accuracy by policy (Fig. 3a)")
    axes[0].legend(fontsize=8)
    axes[1].axvline(100 / 3, color="grey", ls=":", lw=1)
    axes[1].set_xlabel("union coverage of the view (%)")
    axes[1].set_title("Accuracy vs. pixels seen, per setting (T=1..16)")
    axes[1].legend(fontsize=7)
    axes[2].plot(steps_list, steps_list, "k:", lw=1, label="every glimpse distinct")
    axes[2].set_xlabel("glimpses T")
    axes[2].set_ylabel("distinct glimpses (IoU < 0.3)")
    axes[2].set_title("Distinct glimpses, per setting")
    axes[2].grid(alpha=0.3)
    names = list(occlusion)
    axes[3].barh(names, [occlusion[n] * 100 for n in names], color="tab:red")
    axes[3].set_xlabel("top-1 of the occluded photo (%)")
    axes[3].set_title("Occluding the glimpses (Fig. 5b)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
