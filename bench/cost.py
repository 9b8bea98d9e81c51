"""What an explanation costs: explained prediction vs plain classification, same backbone.

    python -m bench.cost --model-dir models --images ../shared/data/imagenet-sample

Both go through the exported SavedModel from JPEG bytes to final outputs, with the same in-graph
decoding and preprocessing: `classify` (full image -> top-5) against `serving_default` (6
glimpses, top-5, glimpse boxes and scores, annotated PNG). Calls alternate between the two so
that the machine's drift hits both alike; medians per call, in one run. Writes cost.json and
cost.md under --out.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import tensorflow as tf
from tqdm import tqdm

from bench.common import environment, load_model, load_photos, markdown_table, write_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=Path("models"))
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=40, help="timed calls per batch size and path")
    args = ap.parse_args()

    images, _, _ = load_photos(args.images, limit=64)
    sm = load_model(args.model_dir)
    paths = {
        "plain": lambda b: sm.signatures["classify"](input_image_bytes=b),
        "explained": lambda b: sm.signatures["serving_default"](input_image_bytes=b),
    }
    results = {}
    for batch in (int(b) for b in args.batches.split(",")):
        inputs = [
            tf.constant([images[(i * batch + j) % len(images)] for j in range(batch)])
            for i in range(args.repeats)
        ]
        for fn in paths.values():  # trace and warm up
            for x in inputs[:3]:
                fn(x)
        times: dict[str, list[float]] = {name: [] for name in paths}
        for x in tqdm(inputs, desc=f"batch {batch}", leave=False):
            for name, fn in paths.items():
                start = time.perf_counter()
                out = fn(x)
                _ = {k: v.numpy() for k, v in out.items()}
                times[name].append(time.perf_counter() - start)
        med = {name: statistics.median(t) * 1000 for name, t in times.items()}
        results[str(batch)] = {
            "plain_ms_per_call": med["plain"],
            "explained_ms_per_call": med["explained"],
            "plain_ms_per_image": med["plain"] / batch,
            "explained_ms_per_image": med["explained"] / batch,
            "ratio": med["explained"] / med["plain"],
        }
    rows = [
        [
            b,
            f"{r['plain_ms_per_image']:.1f}",
            f"{r['explained_ms_per_image']:.1f}",
            f"{r['ratio']:.2f}x",
        ]
        for b, r in results.items()
    ]
    md = "\n".join(
        [
            f"# Cost of an explanation ({args.repeats} alternating calls per row, medians)",
            "",
            markdown_table(
                ["batch", "plain ms/image", "explained (T=6) ms/image", "explained / plain"], rows
            ),
        ]
    )
    write_report(args.out, "cost", {"environment": environment(), "batches": results}, md)


if __name__ == "__main__":
    main()
