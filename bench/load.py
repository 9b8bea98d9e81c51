"""Load: >= 10,000 :predict requests at concurrency 32 against a live gateway (embedded backend).

    python -m bench.load --model-dir models --images ../shared/data/imagenet-sample \
        --out bench/results

The gateway runs as its own process (`glimpse serve`), so its RSS is measured alone, once a
second. Two phases on the same gateway:

1. steady: `--requests` single-photo requests from `--concurrency` connections. At most
   `concurrency` instances ever wait, under the queue limit, so every answer must be 200:
   anything else (a 429 included) is an unexpected error.
2. overload: `--concurrency` connections each sending `--burst-instances` photos per
   request, more instances than the queue holds. Now 429 must appear, each with Retry-After
   and "queue is full"; any other non-200 answer is an unexpected error.

Memory is flat when the mean RSS of the steady phase's last minute is within 10% of its
first minute's. The generator is plain asyncio + httpx (no locust): it shares the repo's
dependencies, and a request's latency is measured around exactly one HTTP exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil

from bench.common import arguments, environment, load_photos, markdown_table, write_report

PREDICT = "/v1/models/saccader:predict"


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        ms = np.array(self.latencies) * 1000
        return {
            "requests": len(self.latencies),
            "seconds": round(self.seconds, 1),
            "requests_per_s": round(len(self.latencies) / self.seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "max_ms": round(float(ms.max()), 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "unexpected_errors": len(self.unexpected),
            "unexpected_examples": self.unexpected[:5],
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gateway(
    model_dir: Path, port: int, queue_limit: int, extra_env: dict[str, str] | None = None
) -> subprocess.Popen:
    """`glimpse serve` on `port`, returned once /healthz/ready answers 200; `extra_env`
    (GLIMPSE_* settings) is added last, so it wins."""
    env = {
        **os.environ,
        "PORT": str(port),
        "GLIMPSE_MODEL_DIR": str(model_dir),
        "GLIMPSE_QUEUE_LIMIT": str(queue_limit),
        "GLIMPSE_JOBS_ENABLED": "false",
        "GLIMPSE_LOG_LEVEL": "WARNING",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **(extra_env or {}),
    }
    exe = Path(sys.executable).parent / "glimpse"
    proc = subprocess.Popen(
        [str(exe), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gateway exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("gateway never became ready")


async def sample_rss(pid: int, samples: list[tuple[float, int]], stop: asyncio.Event) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        samples.append((time.monotonic(), process.memory_info().rss))
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass


@dataclass
class GatewayRun:
    """A gateway process under load: its URL, its RSS each second, and whether it was still
    ready when the load ended (set on leaving `gateway_run`)."""

    url: str
    rss: list[tuple[float, int]] = field(default_factory=list)
    ready_after: int | None = None


@contextlib.asynccontextmanager
async def gateway_run(
    model_dir: Path, queue_limit: int, extra_env: dict[str, str] | None = None
) -> AsyncIterator[GatewayRun]:
    """`glimpse serve` on a free port, its RSS sampled until the block ends; then readiness
    is asked once more and the process stopped (on any exit)."""
    port = free_port()
    proc = start_gateway(model_dir, port, queue_limit, extra_env)
    run = GatewayRun(f"http://127.0.0.1:{port}")
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(proc.pid, run.rss, stop))
    try:
        yield run
        stop.set()
        await sampler
        run.ready_after = httpx.get(run.url + "/healthz/ready", timeout=5).status_code
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=60)


async def run_phase(
    url: str,
    phase: Phase,
    bodies: list[bytes],
    total: int,
    concurrency: int,
    allowed: set[int],
) -> None:
    """`total` requests over `concurrency` connections, cycling through `bodies`."""
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Content-Type": "application/json"}

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            for i in counter:
                started = time.perf_counter()
                try:
                    r = await client.post(PREDICT, content=bodies[i % len(bodies)], headers=headers)
                except httpx.HTTPError as e:
                    phase.unexpected.append(f"{type(e).__name__}: {e}")
                    continue
                phase.latencies.append(time.perf_counter() - started)
                phase.statuses[r.status_code] += 1
                if r.status_code == 200:
                    continue
                refusal = r.status_code in allowed and r.headers.get("retry-after")
                if not refusal or "queue is full" not in r.json().get("error", ""):
                    phase.unexpected.append(f"{r.status_code}: {r.text[:200]}")

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        phase.seconds = time.monotonic() - started


def request_body(photos: list[bytes]) -> bytes:
    instances = [{"input_image_bytes": {"b64": base64.b64encode(p).decode()}} for p in photos]
    return json.dumps({"instances": instances}).encode()


def rss_growth(samples: list[tuple[float, int]], start: float, end: float) -> dict:
    """Mean RSS over the first and the last minute of [start, end]."""
    window = min(60.0, (end - start) / 2)
    first = [r for t, r in samples if start <= t < start + window]
    last = [r for t, r in samples if end - window <= t <= end]
    first_mb, last_mb = np.mean(first) / 2**20, np.mean(last) / 2**20
    return {
        "window_s": round(window, 1),
        "first_mb": round(float(first_mb), 1),
        "last_mb": round(float(last_mb), 1),
        "growth_pct": round(float((last_mb - first_mb) / first_mb * 100), 2),
        "peak_mb": round(max(r for _, r in samples) / 2**20, 1),
    }


async def main_async(args: argparse.Namespace) -> dict:
    photos, _, _ = load_photos(args.images, args.photos)
    singles = [request_body([p]) for p in photos]
    small = sorted(photos, key=len)[: max(args.burst_instances, len(photos) // 2)]  # under 1.5 MB
    bursts = [
        request_body([small[(i + j) % len(small)] for j in range(args.burst_instances)])
        for i in range(len(small))
    ]
    async with gateway_run(args.model_dir, args.queue_limit) as gateway:
        steady = Phase("steady")
        steady_start = time.monotonic()
        await run_phase(
            gateway.url, steady, singles, args.requests, args.concurrency, allowed=set()
        )
        steady_end = time.monotonic()
        overload = Phase("overload")
        await run_phase(
            gateway.url, overload, bursts, args.burst_requests, args.concurrency, allowed={429}
        )
    alive = gateway.ready_after
    memory = rss_growth(gateway.rss, steady_start, steady_end)
    return {
        "environment": environment(),
        "model_dir": str(args.model_dir),
        "concurrency": args.concurrency,
        "queue_limit": args.queue_limit,
        "burst_instances": args.burst_instances,
        "steady": steady.summary(),
        "overload": overload.summary(),
        "rss": memory,
        "ready_after": alive,
        "pass": {
            "steady_no_unexpected_errors": not steady.unexpected and set(steady.statuses) == {200},
            "overload_refused_with_429_only": (
                not overload.unexpected and 429 in overload.statuses
            ),
            "rss_growth_le_10pct": memory["growth_pct"] <= 10.0,
            "ready_after_load": alive == 200,
        },
    }


def report(data: dict) -> str:
    rows = []
    for name in ("steady", "overload"):
        s = data[name]
        statuses = ", ".join(f"{k}: {v}" for k, v in s["statuses"].items())
        rows.append(
            [name, s["requests"], s["requests_per_s"], s["p50_ms"], s["p99_ms"], s["max_ms"],
             statuses, s["unexpected_errors"]]
        )  # fmt: skip
    m = data["rss"]
    checks = "\n".join(f"- {k}: {'PASS' if v else 'FAIL'}" for k, v in data["pass"].items())
    return "\n".join(
        [
            "# Load: :predict at concurrency "
            f"{data['concurrency']} (embedded backend, {data['model_dir']})",
            "",
            markdown_table(
                [
                    "phase",
                    "requests",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "statuses",
                    "unexpected",
                ],
                rows,
            ),  # fmt: skip
            "",
            f"Gateway RSS, steady phase: first {m['window_s']} s {m['first_mb']} MB, last"
            f" {m['window_s']} s {m['last_mb']} MB, growth {m['growth_pct']}% (peak"
            f" {m['peak_mb']} MB). Queue limit {data['queue_limit']} instances; overload sends"
            f" {data['burst_instances']} photos per request.",
            "",
            checks,
            "",
            f"{data['environment']['date']}, {data['environment']['cpus']} CPUs,"
            f" TensorFlow {data['environment']['tensorflow']}.",
        ]
    )


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--photos", type=int, default=64, help="distinct photos to cycle")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--queue-limit", type=int, default=64)
    parser.add_argument("--burst-instances", type=int, default=4)
    parser.add_argument("--burst-requests", type=int, default=640)
    args = parser.parse_args()
    if args.concurrency > args.queue_limit:
        parser.error("--concurrency must not exceed --queue-limit: the steady phase must fit")
    if args.concurrency * args.burst_instances <= args.queue_limit:
        parser.error("the overload phase must offer more instances than --queue-limit")
    data = asyncio.run(main_async(args))
    write_report(args.out, "load", data, report(data))
    if not all(data["pass"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
