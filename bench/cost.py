"""What an explanation costs: explained prediction vs plain classification, same backbone.

    python -m bench.cost --model-dir models --images ../shared/data/imagenet-sample

Both go through the exported SavedModel from JPEG bytes to final outputs, with the same in-graph
decoding and preprocessing: `classify` (full image -> top-5) against `serving_default` (6
glimpses, top-5, glimpse boxes, annotated picture). Calls alternate between them so that the
machine's drift hits all alike; medians per call, in one run. When --option-model names an
export beside the default (`make bench-cost` exports `saccader-fast`: the where pass at 96 px,
a 160-px canvas, the cheapest point of the cost frontier), its `serving_default` is timed in
the same rounds, and its settings are read from its model_info.

Then the explanations through the API, as a client waits for them: a gateway (embedded backend)
on 127.0.0.1 answers `:explain` for --explain-photos photos one at a time, method `glimpses`
(each glimpse re-run alone and without it: 12 glimpse sets) and `sag` (all 63 subsets of the
6 glimpses, one batched run, and the graph's picture), with the default faithfulness score.
Writes cost.json and cost.md under --out.
"""

from __future__ import annotations

import base64
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from bench.common import (
    OPTION_MODEL,
    arguments,
    environment,
    load_model,
    load_photos,
    markdown_table,
    option_settings,
    write_report,
)
from bench.load import free_port, start_gateway

EXPLAINED = ("glimpses", "sag")


def explain_latency(model_dir: Path, images: list[bytes]) -> dict[str, dict[str, float]]:
    """Seconds per :explain answer over HTTP, per method, methods alternating per photo."""
    port = free_port()
    server = start_gateway(model_dir, port, queue_limit=64)
    url = f"http://127.0.0.1:{port}/v1/models/saccader:explain"
    seconds: dict[str, list[float]] = {m: [] for m in EXPLAINED}
    try:
        with httpx.Client(timeout=120) as client:

            def ask(image: bytes, method: str) -> float:
                body = {
                    "instances": [{"input_image_bytes": {"b64": base64.b64encode(image).decode()}}],
                    "parameters": {"method": method},
                }
                start = time.perf_counter()
                r = client.post(url, json=body)
                took = time.perf_counter() - start
                r.raise_for_status()
                return took

            for method in EXPLAINED:  # the first :explain loads the model copy: not timed
                ask(images[0], method)
            for i, image in enumerate(tqdm(images, desc=":explain", leave=False)):
                for method in EXPLAINED[i % 2 :] + EXPLAINED[: i % 2]:
                    seconds[method].append(ask(image, method))
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {
        m: {
            "median_s": statistics.median(t),
            "p90_s": float(np.percentile(t, 90)),
            "max_s": max(t),
            "requests": len(t),
        }
        for m, t in seconds.items()
    }


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=40, help="timed calls per batch size and path")
    ap.add_argument("--explain-photos", type=int, default=24, help="photos sent to :explain")
    ap.add_argument(
        "--option-model", default=OPTION_MODEL, help="a cheaper export to time beside (if any)"
    )
    args = ap.parse_args()

    images, _, _ = load_photos(args.images, limit=64)
    sm = load_model(args.model_dir)
    paths = {
        "plain": lambda b: sm.signatures["classify"](input_image_bytes=b),
        "explained": lambda b: sm.signatures["serving_default"](input_image_bytes=b),
    }
    option = option_settings(args.model_dir, args.option_model)
    if option:
        fast = load_model(args.model_dir, args.option_model)
        paths["option"] = lambda b: fast.signatures["serving_default"](input_image_bytes=b)
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
        if option:
            results[str(batch)]["option_ms_per_image"] = med["option"] / batch
            results[str(batch)]["option_ratio"] = med["option"] / med["plain"]
    rows = [
        [
            b,
            f"{r['plain_ms_per_image']:.1f}",
            f"{r['explained_ms_per_image']:.1f}",
            f"{r['ratio']:.2f}x",
            *([f"{r['option_ms_per_image']:.1f}", f"{r['option_ratio']:.2f}x"] if option else []),
        ]
        for b, r in results.items()
    ]
    headers = ["batch", "plain ms/image", "explained (T=6) ms/image", "explained / plain"]
    if option:
        headers += [f"{option['model']} ms/image", f"{option['model']} / plain"]
    explain = explain_latency(args.model_dir, images[: args.explain_photos])
    md = "\n".join(
        [
            f"# Cost of an explanation ({args.repeats} alternating calls per row, medians)",
            "",
            markdown_table(headers, rows),
            "",
            *(
                [
                    f"`{option['model']}`: the where pass at {option['where_size']} px and a"
                    f" {option['canvas_size']}-px canvas (the cost frontier's option in"
                    " docs/model.md, with its accuracy).",
                    "",
                ]
                if option
                else []
            ),
            f"`:explain` over HTTP, T=6, one request at a time ({args.explain_photos} photos,"
            " seconds from sending the request to the whole answer):",
            "",
            markdown_table(
                ["method", "median s", "p90 s", "max s"],
                [
                    [m, f"{r['median_s']:.2f}", f"{r['p90_s']:.2f}", f"{r['max_s']:.2f}"]
                    for m, r in explain.items()
                ],
            ),
        ]
    )
    data = {
        "environment": environment(),
        "batches": results,
        "option": option,
        "explain_http": explain,
    }
    write_report(args.out, "cost", data, md)


if __name__ == "__main__":
    main()
