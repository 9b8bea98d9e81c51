"""Accuracy of the exported model: full image vs glimpses only, per policy and glimpse count.

    python -m bench.accuracy --model-dir models --images ../shared/data/imagenet-sample

Writes accuracy.json, accuracy.md and accuracy.png under --out:
- full-image top-1/top-5 (the `classify` signature);
- glimpse-only top-1/top-5 and mean union coverage for T = 1, 2, 4, 6, 8, 12 and every policy
  (the paper's Figures 3a and 5a), each run through the exported `serving_options` signature;
- the occlusion test of the paper's Figure 5b: black out the T=6 glimpses of each policy in the
  original photo and classify the whole photo; compare with random patches of equal area.
The sample photos may overlap the backbone's training data: compare settings, do not quote the
numbers as ImageNet-val accuracy.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image
from tqdm import tqdm

from bench.common import environment, load_model, load_photos, markdown_table, write_report
from model_export.config import POLICIES, VIEW_SIZE, SaccaderConfig

BATCH = 16


def policy_model(model_dir: Path, policy: str):
    """The default export for `cam`; baselines are exported once under <model_dir>/baselines."""
    if policy == SaccaderConfig.policy:
        return load_model(model_dir)
    base = model_dir / "baselines" / policy
    if not (base / "saccader" / "1" / "saved_model.pb").exists():
        from model_export.signatures import build, export

        export(build(SaccaderConfig(policy=policy)), base)
    return load_model(base)


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


def classify(sm, images: list[bytes], desc: str) -> np.ndarray:
    fn = sm.signatures["classify"]
    out = []
    for i in tqdm(range(0, len(images), BATCH), desc=desc, leave=False):
        out.append(fn(input_image_bytes=tf.constant(images[i : i + BATCH]))["classes"].numpy())
    return np.concatenate(out)


def _union_area(boxes: np.ndarray) -> int:
    seen = np.zeros((VIEW_SIZE, VIEW_SIZE), bool)
    for y0, x0, y1, x1 in boxes.astype(int):
        if y0 >= 0:
            seen[y0:y1, x0:x1] = True
    return int(seen.sum())


def random_equal_area(boxes: np.ndarray, rng: np.random.Generator, tries: int = 64) -> np.ndarray:
    """Random glimpses of the same count and size whose union area is closest to the original's."""
    valid = boxes[boxes[:, 0] >= 0]
    size = int(valid[0, 2] - valid[0, 0])
    target = _union_area(valid)
    best, best_gap = valid, None
    for _ in range(tries):
        tops = rng.integers(0, VIEW_SIZE - size + 1, size=(len(valid), 2)).astype(np.float32)
        cand = np.concatenate([tops, tops + size], axis=1)
        gap = abs(_union_area(cand) - target)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=Path("models"))
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--limit", type=int, default=None, help="use N photos spread over classes")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--glimpses", default="1,2,4,6,8,12")
    ap.add_argument("--occlusion-glimpses", type=int, default=6)
    args = ap.parse_args()

    images, labels, _ = load_photos(args.images, args.limit)
    policies = args.policies.split(",")
    steps_list = [int(t) for t in args.glimpses.split(",")]
    default = load_model(args.model_dir)
    full = classify(default, images, "full image")
    full1, full5 = topk(full, labels)

    results: dict[str, dict[str, dict[str, float]]] = {}
    occlusion_boxes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for policy in policies:
        sm = policy_model(args.model_dir, policy)
        results[policy] = {}
        for steps in steps_list:
            r = run_policy(sm, images, steps, f"{policy} T={steps}")
            t1, t5 = topk(r["classes"], labels)
            results[policy][str(steps)] = {
                "top1": t1,
                "top5": t5,
                "coverage": float(r["coverage"].mean()),
                "coverage_max": float(r["coverage"].max()),
                "ratio_to_full": t1 / full1,
            }
            if steps == args.occlusion_glimpses:
                occlusion_boxes[policy] = (r["boxes"], r["crop"])

    occlusion: dict[str, float] = {"none": full1}
    rng = np.random.default_rng(0)
    for policy, (boxes, crops) in occlusion_boxes.items():
        occluded = [occlude(im, b, c) for im, b, c in zip(images, boxes, crops, strict=True)]
        occlusion[policy] = topk(classify(default, occluded, f"occlude {policy}"), labels)[0]
        if policy == SaccaderConfig.policy:
            rand = [random_equal_area(b, rng) for b in boxes]
            occluded = [occlude(im, b, c) for im, b, c in zip(images, rand, crops, strict=True)]
            occlusion["random, equal area"] = topk(
                classify(default, occluded, "occlude random equal area"), labels
            )[0]

    header = ["policy"] + [f"T={t}" for t in steps_list]
    rows = [
        [policy]
        + [
            f"{c['top1'] * 100:.1f} / {c['top5'] * 100:.1f} ({c['coverage'] * 100:.0f}%)"
            for c in (results[policy][str(t)] for t in steps_list)
        ]
        for policy in policies
    ]
    md = [
        f"# Accuracy on {len(images)} photos from {args.images}",
        "",
        f"Full image (plain classification): top-1 {full1 * 100:.1f}, top-5 {full5 * 100:.1f}.",
        "",
        "Glimpse-only top-1 / top-5 (mean union coverage of the 224x224 view):",
        "",
        markdown_table(header, rows),
        "",
        f"Occlusion (paper Fig. 5b): top-1 of the whole photo with the T={args.occlusion_glimpses}"
        " glimpses blacked out (lower = the glimpses held more of the evidence):",
        "",
        markdown_table(
            ["occluded", "top-1"], [[k, f"{v * 100:.1f}"] for k, v in occlusion.items()]
        ),
    ]
    if "cam" in results and "6" in results["cam"]:
        c = results["cam"]["6"]
        md += [
            "",
            f"Default (cam, T=6): glimpse-only top-1 = {c['ratio_to_full']:.3f} x full image,"
            f" mean coverage {c['coverage']:.3f} (max {c['coverage_max']:.3f}).",
        ]
    data = {
        "environment": environment(),
        "photos": len(images),
        "full_image": {"top1": full1, "top5": full5},
        "glimpses": results,
        "occlusion": occlusion,
    }
    write_report(args.out, "accuracy", data, "\n".join(md))
    plot(args.out / "accuracy.png", results, steps_list, full1, occlusion)


def plot(path: Path, results, steps_list, full1: float, occlusion: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for policy, cells in results.items():
        axes[0].plot(
            steps_list, [cells[str(t)]["top1"] * 100 for t in steps_list], "o-", label=policy
        )
        axes[1].plot(
            [cells[str(t)]["coverage"] * 100 for t in steps_list],
            [cells[str(t)]["top1"] * 100 for t in steps_list],
            "o-",
            label=policy,
        )
    for ax in axes[:2]:
        ax.axhline(full1 * 100, color="k", ls="--", lw=1, label="full image")
        ax.axhline(full1 * 90, color="grey", ls=":", lw=1, label="0.9 x full image")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("glimpses T")
    axes[0].set_title("Glimpse-only accuracy (Fig. 3a)")
    axes[1].axvline(100 / 3, color="grey", ls=":", lw=1)
    axes[1].set_xlabel("union coverage of the view (%)")
    axes[1].set_title("Accuracy vs. pixels seen (Fig. 5a)")
    axes[1].legend(fontsize=8)
    names = list(occlusion)
    axes[2].barh(names, [occlusion[n] * 100 for n in names], color="tab:red")
    axes[2].set_xlabel("top-1 of the occluded photo (%)")
    axes[2].set_title("Occluding the glimpses (Fig. 5b)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
