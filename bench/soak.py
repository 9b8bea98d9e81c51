"""Soak: 30 minutes of mixed traffic at concurrency 16 against a live gateway.

    python -m bench.soak --model-dir models --images ../shared/data/imagenet-sample \
        --out bench/results

The gateway runs as its own process (`glimpse serve`, embedded backend, the jobs API on with
its local paths under a temporary folder). For `--minutes`, `--concurrency` connections each
post one request after another, every one drawn at random (seeded):

- `--hostile-share` of them are bench/hostile.py's bombs (decode bombs and costly-to-parse
  bodies), posted to TF Serving's :predict;
- the rest are good requests: TF Serving's :predict with 1, 4 and 16 photos, its tensor form
  (`inputs`, serving_default), Vertex's :predict, v2 `infer` (JSON, the photo as base64 text),
  :explain with every method the service offers in turn (one photo, few integration steps; at
  most `--explain-in-flight` at once, under GLIMPSE_EXPLAIN_MAX_PENDING, else another kind is
  drawn), and the jobs API (list the project's jobs, or get the latest job).

Beside them, a batch prediction job of `--job-photos` photos is submitted through the jobs API
every `--job-every-s` and followed to its end, and /healthz/live is asked every 50 ms from a
process of its own (one per window, started a little before it, so there is no gap). The
gateway's RSS is sampled every second.

Results per window of `--window-minutes` (default: the warm-up, so the first window is the
warm-up). Targets (issue: soak): no 5xx at all; every good request 2xx; good p99 of every later
window <= 2x the first window's; /healthz/live always under 100 ms; RSS after the warm-up flat
within +-10% (mean of its first minute vs the last minute's, and its peak vs the first
minute); every bomb a 4xx (the 6000x6000 GIF canvas may be a 200: it is a valid image); every
job SUCCEEDED; the gateway ready afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import multiprocessing
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.common import (
    arguments,
    environment,
    footer,
    load_photos,
    markdown_table,
    write_report,
)
from bench.hostile import bombs, probe
from bench.load import PREDICT, gateway_run, request_body, rss_growth
from service.explain.registry import DEFAULT_STEPS
from service.explain.schemas import METHODS

EXPLAIN = "/v1/models/saccader:explain"
VERTEX = "/v1/projects/p/locations/us-central1/endpoints/saccader:predict"
V2_INFER = "/v2/models/saccader/infer"
JOBS = "/v1/projects/p/jobs"
CANVAS = "gif_canvas_6000x6000"  # a valid image: 200 is a right answer too
PROBE_LEAD_S = 10.0  # a window's probe starts this early: spawning it takes seconds
LIVE_MAX_MS = 100.0

# Good traffic, relative weights. Explanations cost up to seconds each, so they stay few.
WEIGHTS = {
    "predict_1": 30,
    "predict_4": 14,
    "predict_16": 5,
    "tensor": 10,
    "vertex": 14,
    "v2_infer": 14,
    "explain": 5,
    "jobs": 3,
}


def b64(photo: bytes) -> str:
    return base64.b64encode(photo).decode()


def groups(photos: list[bytes], size: int, limit: int) -> list[bytes]:
    """:predict bodies of `size` photos each, cycling through the photos small enough that any
    `size` of them fit under the payload limit `limit` (base64 grows them by a third)."""
    fits = [p for p in sorted(photos, key=len) if len(p) * 4 / 3 * size < limit * 0.95]
    if len(fits) < size:
        raise SystemExit(f"fewer than {size} photos fit {size} to a request under {limit} bytes")
    return [
        request_body([fits[(i + j) % len(fits)] for j in range(size)]) for i in range(len(fits))
    ]


def explain_parameters(method: str, steps: int) -> dict:
    """`method` at its cheapest sensible settings: few integration steps, few noisy copies."""
    params: dict = {"method": method}
    if method in DEFAULT_STEPS:
        params["steps"] = steps
    if method == "smoothgrad":
        params["smoothgrad_samples"] = 5
    return params


@dataclass
class Bodies:
    """Every good request's body, built once: kind -> list of (path, body) to draw from."""

    by_kind: dict[str, list[tuple[str, bytes]]]
    explain: dict[str, list[bytes]]  # method -> bodies

    @classmethod
    def build(cls, photos: list[bytes], limit: int, steps: int) -> Bodies:
        tensor = [
            json.dumps(
                {
                    "signature_name": "serving_default",
                    "inputs": {"input_image_bytes": [{"b64": b64(p)}]},
                }
            ).encode()
            for p in photos
        ]
        v2 = [
            json.dumps(
                {
                    "inputs": [
                        {"name": "input_image_bytes", "shape": [1], "datatype": "BYTES",
                         "data": [b64(p)]}
                    ]
                }
            ).encode()
            for p in photos
        ]  # fmt: skip
        singles = [request_body([p]) for p in photos]
        by_kind = {
            "predict_1": [(PREDICT, b) for b in singles],
            "predict_4": [(PREDICT, b) for b in groups(photos, 4, limit)],
            "predict_16": [(PREDICT, b) for b in groups(photos, 16, limit)],
            "tensor": [(PREDICT, b) for b in tensor],
            "vertex": [(VERTEX, b) for b in singles],
            "v2_infer": [(V2_INFER, b) for b in v2],
        }
        explain = {
            m: [
                json.dumps(
                    {
                        "instances": [{"input_image_bytes": {"b64": b64(p)}}],
                        "parameters": explain_parameters(m, steps),
                    }
                ).encode()
                for p in photos
            ]
            for m in METHODS
        }
        return cls(by_kind, explain)


@dataclass
class Record:
    t: float  # seconds since the traffic began, when the request was sent
    kind: str  # a WEIGHTS key, `explain:<method>`, or `bomb:<name>`
    status: int  # -1: no answer (a transport error)
    seconds: float


@dataclass
class Job:
    job_id: str
    submitted_t: float
    create_status: int
    state: str = "NOT_CREATED"
    seconds: float | None = None
    output: dict = field(default_factory=dict)


@dataclass
class Soak:
    records: list[Record] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # good requests not 2xx, examples
    jobs: list[Job] = field(default_factory=list)
    job_errors: list[str] = field(default_factory=list)
    live: list[list[float]] = field(default_factory=list)  # per window, seconds
    start: float = 0.0
    end: float = 0.0


def start_probe(url: str):
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=probe, args=(url, stop, send), daemon=True)
    process.start()
    return process, stop, receive


async def end_probe(handle) -> list[float]:
    process, stop, receive = handle
    stop.set()
    latencies = await asyncio.to_thread(receive.recv)
    process.join(timeout=30)
    return latencies


async def probes(url: str, soak: Soak, windows: int, window_s: float, seconds: float) -> None:
    """One probe process per window, each started PROBE_LEAD_S before its window and stopped
    at its end, so that /healthz/live is asked throughout and each window has its own."""
    current = start_probe(url)
    for k in range(windows):
        end = soak.start + min((k + 1) * window_s, seconds)
        following = None
        if k + 1 < windows:
            await asyncio.sleep(max(0.0, end - PROBE_LEAD_S - time.monotonic()))
            following = start_probe(url)
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        soak.live.append(await end_probe(current))
        current = following


async def jobs_loop(
    client: httpx.AsyncClient,
    soak: Soak,
    folder: Path,
    photos: list[bytes],
    every_s: float,
    deadline: float,
) -> None:
    """A batch prediction job every `every_s` (the first after a tenth of it), each followed
    to its end before the next; none is submitted after `deadline`."""
    source = folder / "input.jsonl"
    lines = [
        json.dumps({"input_image_bytes": {"b64": b64(p)}, "key": i}) for i, p in enumerate(photos)
    ]
    source.write_text("\n".join(lines) + "\n")
    next_at = soak.start + every_s / 10
    for i in itertools.count():
        await asyncio.sleep(max(0.0, min(next_at, deadline) - time.monotonic()))
        if time.monotonic() >= deadline:
            return
        next_at += every_s
        job_id = f"soak_{i}"
        body = {
            "jobId": job_id,
            "predictionInput": {
                "dataFormat": "JSON",
                "inputPaths": [str(source)],
                "outputPath": str(folder / job_id),
                "batchSize": 8,
                "maxWorkerCount": 1,
            },
        }
        started = time.monotonic()
        try:
            r = await client.post(JOBS, json=body)
            status = r.status_code
        except httpx.HTTPError as e:
            status, r = -1, None
            soak.job_errors.append(f"create {job_id}: {type(e).__name__}: {e}")
        job = Job(job_id, round(started - soak.start, 1), status)
        soak.jobs.append(job)
        if status != 200:
            if r is not None:
                soak.job_errors.append(f"create {job_id}: {status}: {r.text[:200]}")
            continue
        job.state = r.json().get("state", "?")
        while job.state not in ("SUCCEEDED", "FAILED", "CANCELLED"):
            await asyncio.sleep(1.0)
            try:
                r = await client.get(f"{JOBS}/{job_id}")
            except httpx.HTTPError as e:
                soak.job_errors.append(f"get {job_id}: {type(e).__name__}: {e}")
                continue
            if r.status_code != 200:
                soak.job_errors.append(f"get {job_id}: {r.status_code}: {r.text[:200]}")
                continue
            answer = r.json()
            job.state = answer.get("state", "?")
            job.output = answer.get("predictionOutput", {})
            if time.monotonic() - started > 600:
                soak.job_errors.append(f"{job_id}: still {job.state} after 600 s")
                break
        job.seconds = round(time.monotonic() - started, 1)


async def traffic(
    url: str,
    soak: Soak,
    bodies: Bodies,
    hostile: dict[str, bytes],
    args: argparse.Namespace,
    folder: Path,
    job_photos: list[bytes],
) -> None:
    rng = random.Random(args.seed)
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    others = [k for k in kinds if k != "explain"]
    other_weights = [WEIGHTS[k] for k in others]
    methods = itertools.cycle(METHODS)
    names = list(hostile)
    headers = {"Content-Type": "application/json"}
    limits = httpx.Limits(
        max_connections=args.concurrency + 1, max_keepalive_connections=args.concurrency + 1
    )
    explaining = 0
    window_s = args.window_minutes * 60
    seconds = args.minutes * 60
    windows = int(np.ceil(seconds / window_s))
    soak.start = time.monotonic()
    deadline = soak.start + seconds

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def send(kind: str, method: str, path: str, content: bytes | None) -> Record:
            started = time.perf_counter()
            sent = time.monotonic() - soak.start
            try:
                if method == "GET":
                    r = await client.get(path)
                else:
                    r = await client.post(path, content=content, headers=headers)
                status = r.status_code
            except httpx.HTTPError as e:
                status, r = -1, None
                if not kind.startswith("bomb:"):
                    soak.failures.append(f"{kind}: {type(e).__name__}: {e}")
            record = Record(sent, kind, status, time.perf_counter() - started)
            soak.records.append(record)
            if r is not None and not kind.startswith("bomb:") and not 200 <= status < 300:
                soak.failures.append(f"{kind} {status}: {r.text[:200]}")
            return record

        async def worker() -> None:
            nonlocal explaining
            while time.monotonic() < deadline:
                if rng.random() < args.hostile_share:
                    name = names[rng.randrange(len(names))]
                    await send(f"bomb:{name}", "POST", PREDICT, hostile[name])
                    continue
                kind = rng.choices(kinds, weights)[0]
                if kind == "explain" and explaining >= args.explain_in_flight:
                    kind = rng.choices(others, other_weights)[0]
                if kind == "explain":
                    method = next(methods)
                    choices = bodies.explain[method]
                    explaining += 1
                    try:
                        await send(f"explain:{method}", "POST", EXPLAIN, rng.choice(choices))
                    finally:
                        explaining -= 1
                elif kind == "jobs":
                    latest = soak.jobs[-1].job_id if soak.jobs and rng.random() < 0.5 else None
                    path = f"{JOBS}/{latest}" if latest else f"{JOBS}?pageSize=20"
                    await send(kind, "GET", path, None)
                else:
                    path, content = rng.choice(bodies.by_kind[kind])
                    await send(kind, "POST", path, content)

        await asyncio.gather(
            probes(url, soak, windows, window_s, seconds),
            jobs_loop(client, soak, folder, job_photos, args.job_every_s, deadline),
            *(worker() for _ in range(args.concurrency)),
        )
    soak.end = time.monotonic()


def pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


def is_good(r: Record) -> bool:
    return not r.kind.startswith("bomb:")


def window_summary(
    soak: Soak, k: int, window_s: float, rss: list[tuple[float, int]], last: bool
) -> dict:
    lo, hi = k * window_s, (k + 1) * window_s
    inside = [r for r in soak.records if lo <= r.t < hi or (last and r.t >= hi)]
    good = [r for r in inside if is_good(r)]
    ok = np.array([r.seconds for r in good if 200 <= r.status < 300]) * 1000
    live = np.array(soak.live[k] if k < len(soak.live) else []) * 1000
    until = soak.start + min(hi, soak.end - soak.start)
    at_end = [b for t, b in rss if t <= until]
    return {
        "window": k,
        "from_s": round(lo),
        "to_s": round(min(hi, soak.end - soak.start)),
        "good_requests": len(good),
        "good_p50_ms": pct(ok, 50),
        "good_p99_ms": pct(ok, 99),
        "good_not_2xx": sum(not 200 <= r.status < 300 for r in good),
        "bombs": len(inside) - len(good),
        "status_5xx": sum(r.status >= 500 for r in inside),
        "live_probes": len(live),
        "live_p99_ms": pct(live, 99),
        "live_max_ms": round(float(live.max()), 1) if len(live) else None,
        "live_over_100ms": int((live >= LIVE_MAX_MS).sum()),
        "rss_end_mb": round(at_end[-1] / 2**20, 1) if at_end else None,
    }


def kind_summary(records: list[Record]) -> dict:
    by: dict[str, list[Record]] = {}
    for r in records:
        by.setdefault(r.kind, []).append(r)
    out = {}
    for kind in sorted(by):
        rs = by[kind]
        ms = np.array([r.seconds for r in rs if 200 <= r.status < 300]) * 1000
        out[kind] = {
            "requests": len(rs),
            "p50_ms": pct(ms, 50),
            "p99_ms": pct(ms, 99),
            "max_ms": round(float(ms.max()), 1) if len(ms) else None,
            "statuses": {str(k): v for k, v in sorted(Counter(r.status for r in rs).items())},
        }
    return out


def memory_after_warmup(soak: Soak, rss: list[tuple[float, int]], warmup_s: float) -> dict:
    """rss_growth over the time after the warm-up, and the peak of that time against the
    mean of its first minute."""
    start = soak.start + warmup_s
    memory = rss_growth(rss, start, soak.end)
    after = [b for t, b in rss if start <= t <= soak.end]
    memory["peak_after_warmup_mb"] = round(max(after) / 2**20, 1)
    memory["peak_vs_first_pct"] = round(
        (memory["peak_after_warmup_mb"] - memory["first_mb"]) / memory["first_mb"] * 100, 2
    )
    return memory


async def main_async(args: argparse.Namespace) -> dict:
    photos, _, _ = load_photos(args.images, args.photos)
    bodies = Bodies.build(photos, args.max_payload_bytes, args.explain_steps)
    hostile = bombs()
    with tempfile.TemporaryDirectory(prefix="glimpse-soak-") as tmp:
        folder = Path(tmp).resolve()
        env = {"GLIMPSE_JOBS_ENABLED": "true", "GLIMPSE_JOBS_LOCAL_ROOT": str(folder)}
        async with gateway_run(args.model_dir, args.queue_limit, env) as gateway:
            soak = Soak()
            await traffic(
                gateway.url, soak, bodies, hostile, args, folder, photos[: args.job_photos]
            )
    window_s = args.window_minutes * 60
    count = int(np.ceil(args.minutes * 60 / window_s))
    windows = [window_summary(soak, k, window_s, gateway.rss, k == count - 1) for k in range(count)]
    memory = memory_after_warmup(soak, gateway.rss, args.warmup_minutes * 60)
    good = [r for r in soak.records if is_good(r)]
    bomb_records = [r for r in soak.records if not is_good(r)]
    bomb_statuses: dict[str, Counter] = {}
    for r in bomb_records:
        bomb_statuses.setdefault(r.kind.removeprefix("bomb:"), Counter())[r.status] += 1
    bomb_max_s = max((r.seconds for r in bomb_records), default=0.0)
    bombs_ok = all(
        400 <= s < 500 or (name == CANVAS and s == 200)
        for name, counts in bomb_statuses.items()
        for s in counts
    )
    first_p99 = windows[0]["good_p99_ms"]
    live_max = max((w["live_max_ms"] or 0.0) for w in windows)
    methods_answered = {
        r.kind.removeprefix("explain:")
        for r in good
        if r.kind.startswith("explain:") and r.status == 200
    }
    checks = {
        "no_5xx": all(w["status_5xx"] == 0 for w in windows),
        "good_requests_all_2xx": all(200 <= r.status < 300 for r in good),
        "good_p99_le_2x_first_window": first_p99 is not None
        and all((w["good_p99_ms"] or 0.0) <= 2 * first_p99 for w in windows[1:]),
        "live_max_lt_100ms": live_max < LIVE_MAX_MS and all(w["live_probes"] for w in windows),
        "rss_flat_within_10pct_after_warmup": abs(memory["growth_pct"]) <= 10
        and memory["peak_vs_first_pct"] <= 10,
        "bombs_answered_4xx": bool(bomb_records) and bombs_ok and bomb_max_s < args.deadline_s,
        "every_explain_method_answered": methods_answered == set(METHODS),
        "jobs_succeeded": bool(soak.jobs)
        and all(j.state == "SUCCEEDED" and j.output.get("errorCount") == "0" for j in soak.jobs)
        and not soak.job_errors,
        "ready_afterwards": gateway.ready_after == 200,
    }
    return {
        "environment": environment(),
        "model_dir": str(args.model_dir),
        "minutes": args.minutes,
        "warmup_minutes": args.warmup_minutes,
        "window_minutes": args.window_minutes,
        "concurrency": args.concurrency,
        "hostile_share": args.hostile_share,
        "queue_limit": args.queue_limit,
        "weights": WEIGHTS,
        "explain_steps": args.explain_steps,
        "explain_in_flight": args.explain_in_flight,
        "photos": len(photos),
        "job_photos": args.job_photos,
        "job_every_s": args.job_every_s,
        "requests": len(soak.records),
        "seconds": round(soak.end - soak.start, 1),
        "windows": windows,
        "kinds": kind_summary(soak.records),
        "bombs": {k: {str(s): n for s, n in v.items()} for k, v in bomb_statuses.items()},
        "bomb_max_s": round(bomb_max_s, 2),
        "good_failure_examples": soak.failures[:10],
        "jobs": [j.__dict__ for j in soak.jobs],
        "job_errors": soak.job_errors[:10],
        "memory_after_warmup": memory,
        "ready_after": gateway.ready_after,
        "checks": checks,
    }


WINDOW_HEADER = [
    "window", "minutes", "good requests", "p50 ms", "p99 ms", "good not 2xx", "bombs", "5xx",
    "live probes", "live p99 ms", "live max ms", "live >= 100 ms", "RSS at end MB",
]  # fmt: skip


def render(r: dict) -> str:
    rows = [
        [
            f"{w['window']}{' (warm-up)' if w['window'] == 0 else ''}",
            f"{w['from_s'] / 60:g}-{w['to_s'] / 60:.3g}",
            w["good_requests"], w["good_p50_ms"], w["good_p99_ms"], w["good_not_2xx"],
            w["bombs"], w["status_5xx"], w["live_probes"], w["live_p99_ms"], w["live_max_ms"],
            w["live_over_100ms"], w["rss_end_mb"],
        ]
        for w in r["windows"]
    ]  # fmt: skip
    kinds = [
        [kind, k["requests"], k["p50_ms"], k["p99_ms"], k["max_ms"],
         ", ".join(f"{s}: {n}" for s, n in k["statuses"].items())]
        for kind, k in r["kinds"].items()
        if not kind.startswith("bomb:")
    ]  # fmt: skip
    bombs = "; ".join(f"{name}: {dict(counts)}" for name, counts in r["bombs"].items())
    mem = r["memory_after_warmup"]
    first = r["windows"][0]["good_p99_ms"]
    worst = max((w["good_p99_ms"] or 0.0) for w in r["windows"][1:]) if r["windows"][1:] else None
    ratio = f"{worst / first:.2f}x" if worst and first else "n/a"
    jobs = r["jobs"]
    job_seconds = [j["seconds"] for j in jobs if j["seconds"] is not None]
    job_states = Counter(j["state"] for j in jobs)
    mix = ", ".join(f"{k} {v}" for k, v in r["weights"].items())
    lines = [
        f"# Soak: {r['minutes']:g} minutes of mixed traffic at concurrency {r['concurrency']},"
        f" {r['hostile_share']:.0%} hostile",
        "",
        markdown_table(WINDOW_HEADER, rows),
        "",
        markdown_table(["good kind", "requests", "p50 ms", "p99 ms", "max ms", "statuses"], kinds),
        "",
        f"{r['requests']} requests in {r['seconds']:g} s. Good mix (weights): {mix}; :explain"
        f" cycles through every method (steps {r['explain_steps']} where they apply, SmoothGrad"
        f" 5 samples), at most {r['explain_in_flight']} at once. Queue limit"
        f" {r['queue_limit']} instances.",
        f"Bombs (status: count): {bombs}; slowest answer {r['bomb_max_s']} s.",
        f"Good p99, worst later window / warm-up window: {ratio}.",
        f"Gateway RSS after the warm-up: first {mem['window_s']:g} s {mem['first_mb']} MB, last"
        f" {mem['last_mb']} MB, growth {mem['growth_pct']}%; peak {mem['peak_after_warmup_mb']}"
        f" MB ({mem['peak_vs_first_pct']:+}% of the first).",
        f"Batch jobs through the jobs API, {r['job_photos']} photos each, one every"
        f" {r['job_every_s']:g} s: {len(jobs)}, {dict(job_states)}; the longest took"
        f" {max(job_seconds, default=0):g} s.",
    ]
    if r["good_failure_examples"] or r["job_errors"]:
        lines += ["", "Failures (first 10):"]
        lines += [f"- {f}" for f in r["good_failure_examples"] + r["job_errors"]]
    lines += [
        "",
        *[f"- {k}: {'PASS' if v else 'FAIL'}" for k, v in r["checks"].items()],
        "",
        footer(r["environment"]),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--warmup-minutes", type=float, default=5.0, help="the p99 baseline too")
    ap.add_argument(
        "--window-minutes", type=float, default=None, help="report windows (default: warm-up)"
    )
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--hostile-share", type=float, default=0.10)
    ap.add_argument("--photos", type=int, default=64)
    ap.add_argument("--explain-steps", type=int, default=10, help="IG, Blur IG and XRAI")
    ap.add_argument("--explain-in-flight", type=int, default=2)
    ap.add_argument("--job-every-s", type=float, default=120.0)
    ap.add_argument("--job-photos", type=int, default=8)
    # 16 connections x 16 photos is 256 instances, and a job's batch comes on top.
    ap.add_argument("--queue-limit", type=int, default=512)
    ap.add_argument("--max-payload-bytes", type=int, default=1_500_000)
    ap.add_argument("--deadline-s", type=float, default=30.0, help="slowest bomb answer allowed")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.window_minutes = args.window_minutes or args.warmup_minutes
    if args.minutes <= args.warmup_minutes:
        ap.error("--minutes must be longer than --warmup-minutes")
    result = asyncio.run(main_async(args))
    write_report(args.out, "soak", result, render(result))


if __name__ == "__main__":
    main()
