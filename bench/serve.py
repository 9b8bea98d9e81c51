"""Serving benchmark: the gateway over HTTP against the SavedModel called in-process, one run.

    python -m bench.serve --model-dir models --images ../shared/data/imagenet-sample

Starts `glimpse serve` (embedded backend) as a separate process on a free 127.0.0.1 port,
measures time to ready and its RSS, then latency percentiles and throughput at concurrency
1, 4, 16 and 32 with an async HTTP client; the in-process baseline calls the same signature
(`serving_options`, 6 glimpses, top 5) at batch 1 and at batch 1-16. The gateway and the
client share the machine's 2 cores, as a sidecar client would. Writes serve.json and serve.md.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import arguments, environment, load_photos, markdown_table, write_report

_JSON = {"content-type": "application/json"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stage_totals(base: str) -> dict[str, tuple[float, float]]:
    """(sum of seconds, count) per stage, from the gateway's own Prometheus histograms."""
    totals: dict[str, list[float]] = {}
    for line in httpx.get(base + "/metrics").text.splitlines():
        for kind in ("sum", "count"):
            prefix = f'glimpse_stage_seconds_{kind}{{stage="'
            if line.startswith(prefix):
                stage = line[len(prefix) :].split('"')[0]
                totals.setdefault(stage, [0.0, 0.0])[kind == "count"] = float(line.split()[-1])
    return {k: (v[0], v[1]) for k, v in totals.items()}


def in_process(model_dir: Path, images: list[bytes], seconds: float) -> dict:
    import tensorflow as tf

    from bench.common import load_model

    fn = load_model(model_dir).signatures["serving_options"]

    def call(batch: list[bytes]) -> None:
        n = len(batch)
        out = fn(
            input_image_bytes=tf.constant(batch),
            num_glimpses=tf.fill([n], 6),
            top_k=tf.fill([n], 5),
        )
        _ = {k: v.numpy() for k, v in out.items()}

    for _ in range(3):
        call(images[:1])
    lat = []
    for i in range(60):
        t = time.perf_counter()
        call([images[i % len(images)]])
        lat.append(time.perf_counter() - t)
    throughput = {}
    for batch in (1, 4, 8, 16):
        call(images[:batch])
        done, start, i = 0, time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            call([images[(i + j) % len(images)] for j in range(batch)])
            done += batch
            i += batch
        throughput[batch] = done / (time.perf_counter() - start)
    return {"latency_p50_ms": statistics.median(lat) * 1000, "throughput": throughput}


async def load(url: str, payloads: list[bytes], concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(k: int, client: httpx.AsyncClient) -> None:
        nonlocal errors
        i = k
        while time.perf_counter() < stop:
            t = time.perf_counter()
            r = await client.post(url, content=payloads[i % len(payloads)], headers=_JSON)
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t)
            else:
                errors += 1
            i += concurrency

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for p in payloads[:2]:
            await client.post(url, content=p, headers=_JSON)
        start = time.perf_counter()
        await asyncio.gather(*(worker(k, client) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    q = np.percentile(np.array(latencies) * 1000, [50, 95, 99]) if latencies else [np.nan] * 3
    return {
        "requests": len(latencies),
        "errors": errors,
        "throughput": len(latencies) / elapsed,
        "p50_ms": float(q[0]),
        "p95_ms": float(q[1]),
        "p99_ms": float(q[2]),
    }


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--seconds", type=float, default=12.0, help="per concurrency level")
    ap.add_argument("--concurrency", default="1,4,16,32")
    args = ap.parse_args()

    images, _, _ = load_photos(args.images, limit=48)
    # Bodies are serialised once: the client's own JSON work would otherwise share the two
    # cores with the gateway and be billed to it.
    payloads = [
        json.dumps(
            {"instances": [{"input_image_bytes": {"b64": base64.b64encode(im).decode()}}]}
        ).encode()
        for im in images
    ]
    port = _free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "GLIMPSE_MODEL_DIR": str(args.model_dir),
        "GLIMPSE_LOG_LEVEL": "WARNING",
    }
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit("the gateway exited during start-up")
            try:
                if httpx.get(base + "/healthz/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        ready_s = time.perf_counter() - started
        rss_ready = _rss_mb(server.pid)
        http = {}
        for c in (int(x) for x in args.concurrency.split(",")):
            before = stage_totals(base)
            http[c] = asyncio.run(
                load(base + "/v1/models/saccader:predict", payloads, c, args.seconds)
            )
            after = stage_totals(base)
            http[c]["stage_mean_ms"] = {
                stage: 1000
                * (total - before.get(stage, (0.0, 0.0))[0])
                / max(1.0, count - before.get(stage, (0.0, 0.0))[1])
                for stage, (total, count) in after.items()
            }
            print(f"concurrency {c}: {http[c]}")
        rss_loaded = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)

    local = in_process(args.model_dir, images, args.seconds / 2)
    best_batched = max(local["throughput"].values())
    p50_ratio = http[1]["p50_ms"] / local["latency_p50_ms"] if 1 in http else float("nan")
    tput_ratio = http[16]["throughput"] / best_batched if 16 in http else float("nan")
    stages = ("decode", "queue", "model", "encode")
    rows = [
        [c, f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['p99_ms']:.1f}"]
        + [f"{r['throughput']:.1f}", r["errors"]]
        + [f"{r['stage_mean_ms'].get(s, float('nan')):.1f}" for s in stages]
        for c, r in http.items()
    ]
    md = "\n".join(
        [
            "# Serving: HTTP gateway (embedded backend) vs the SavedModel in-process",
            "",
            markdown_table(
                ["concurrency", "p50 ms", "p95 ms", "p99 ms", "req/s", "errors"]
                + [f"{s} ms (mean)" for s in stages],
                rows,
            ),
            "",
            f"In-process, batch 1: p50 {local['latency_p50_ms']:.1f} ms. "
            "Batched throughput (img/s): "
            + ", ".join(f"batch {b}: {t:.1f}" for b, t in local["throughput"].items())
            + ".",
            "",
            f"- p50 at concurrency 1 / in-process p50: **{p50_ratio:.2f}x** (target <= 1.15x)",
            f"- throughput at concurrency 16 / best in-process batched: **{tput_ratio:.2f}x**"
            " (target >= 0.85x)",
            f"- process start to ready: {ready_s:.1f} s; RSS {rss_ready:.0f} MB when ready, "
            f"{rss_loaded:.0f} MB after the load test",
        ]
    )
    data = {
        "environment": environment(),
        "http": http,
        "in_process": local,
        "p50_ratio": p50_ratio,
        "throughput_ratio": tput_ratio,
        "start_to_ready_s": ready_s,
        "rss_mb_ready": rss_ready,
        "rss_mb_after_load": rss_loaded,
    }
    write_report(args.out, "serve", data, md)


if __name__ == "__main__":
    main()
