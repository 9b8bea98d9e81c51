"""Models: the gateway's memory with 1, 2 and 4 models served.

    python -m bench.models --model-dir models --images ../shared/data/imagenet-sample \
        --out bench/results

For each count n (`--counts`, one after the other, each in a fresh gateway process): a
temporary model base holding n real copies of `<model-dir>/saccader/1` (saccader, m2, m3,
m4, each `<name>/1/`; copied, not linked, so that nothing is shared), `glimpse serve` with
GLIMPSE_MODEL_DIR on it (every model folder is served). Once /healthz/ready is 200 and every
model's status shows version 1 AVAILABLE, one one-photo :predict goes to each model; after
`--settle-s` the gateway process's RSS is read (its child processes, if any, apart), and it
is stopped.

Target (issue: many models): each extra model adds <= 400 MB of gateway RSS, i.e.
(rss_n - rss_1) / (n - 1); a bare tf.saved_model.load of the model plus one prediction adds
about 350 MB per copy.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench.common import (
    arguments,
    environment,
    footer,
    int_list,
    load_photos,
    markdown_table,
    write_report,
)
from bench.load import free_port, request_body, start_gateway

NAMES = ["saccader", "m2", "m3", "m4", "m5", "m6", "m7", "m8"]
TARGET_MB_PER_MODEL = 400.0


def model_base(source: Path, folder: Path, n: int) -> list[str]:
    """n copies of the SavedModel `source` as version 1 of NAMES[:n] under `folder`."""
    names = NAMES[:n]
    for name in names:
        shutil.copytree(source, folder / name / "1", symlinks=False)
    return names


def wait_available(url: str, names: list[str], timeout_s: float = 300.0) -> None:
    """Until every model's GET /v1/models/<name> shows version 1 AVAILABLE."""
    deadline = time.monotonic() + timeout_s
    waiting = set(names)
    while waiting:
        for name in sorted(waiting):
            r = httpx.get(f"{url}/v1/models/{name}", timeout=5)
            versions = r.json().get("model_version_status", []) if r.status_code == 200 else []
            if any(v["version"] == "1" and v["state"] == "AVAILABLE" for v in versions):
                waiting.discard(name)
        if waiting and time.monotonic() > deadline:
            raise SystemExit(f"models never became AVAILABLE: {sorted(waiting)}")
        time.sleep(0.2)


def mb(value: int) -> float:
    return round(value / 2**20, 1)


def measure(source: Path, n: int, body: bytes, settle_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"glimpse-models-{n}-") as tmp:
        names = model_base(source, Path(tmp), n)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        proc = start_gateway(Path(tmp), port, queue_limit=256)
        try:
            ready_s = time.monotonic() - started
            wait_available(url, names)
            available_s = time.monotonic() - started
            statuses = {}
            with httpx.Client(base_url=url, timeout=120) as client:
                for name in names:
                    r = client.post(
                        f"/v1/models/{name}:predict",
                        content=body,
                        headers={"Content-Type": "application/json"},
                    )
                    statuses[name] = r.status_code
            time.sleep(settle_s)
            process = psutil.Process(proc.pid)
            rss = process.memory_info().rss
            children = {
                f"{c.pid} {c.name()}": mb(c.memory_info().rss)
                for c in process.children(recursive=True)
            }
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    result = {
        "models": n,
        "names": names,
        "ready_s": round(ready_s, 1),
        "all_available_s": round(available_s, 1),
        "predict_statuses": statuses,
        "rss_mb": mb(rss),
        "children_rss_mb": children,
        "total_rss_mb": round(mb(rss) + sum(children.values()), 1),
    }
    print(
        f"{n} model(s): ready in {result['ready_s']} s, RSS {result['rss_mb']} MB"
        f" (children {children or 'none'}), :predict {statuses}",
        flush=True,
    )
    return result


def main_run(args: argparse.Namespace) -> dict:
    source = args.model_dir / "saccader" / "1"
    if not (source / "saved_model.pb").is_file():
        raise SystemExit(f"no SavedModel at {source}: run `make export` first")
    photos, _, _ = load_photos(args.images, 1)
    body = request_body(photos[:1])
    runs = [measure(source, n, body, args.settle_s) for n in args.counts]
    base = next((r for r in runs if r["models"] == 1), None)
    for r in runs:
        extra = r["models"] - 1
        ok = base is not None and extra > 0
        r["mb_per_extra_model"] = round((r["rss_mb"] - base["rss_mb"]) / extra, 1) if ok else None
        r["total_mb_per_extra_model"] = (
            round((r["total_rss_mb"] - base["total_rss_mb"]) / extra, 1) if ok else None
        )
    increments = [r["mb_per_extra_model"] for r in runs if r["mb_per_extra_model"] is not None]
    checks = {
        "every_model_answered_200": all(set(r["predict_statuses"].values()) == {200} for r in runs),
        "mb_per_extra_model_le_400": bool(increments)
        and all(i <= TARGET_MB_PER_MODEL for i in increments),
    }
    return {
        "environment": environment(),
        "model": str(source),
        "model_mb_on_disk": mb(sum(f.stat().st_size for f in source.rglob("*") if f.is_file())),
        "settle_s": args.settle_s,
        "target_mb_per_extra_model": TARGET_MB_PER_MODEL,
        "runs": runs,
        "checks": checks,
    }


def render(r: dict) -> str:
    rows = []
    for run in r["runs"]:
        extra = run["mb_per_extra_model"]
        verdict = "-" if extra is None else ("PASS" if extra <= TARGET_MB_PER_MODEL else "FAIL")
        children = sum(run["children_rss_mb"].values())
        rows.append(
            [run["models"], run["ready_s"], run["all_available_s"], run["rss_mb"],
             round(children, 1), run["total_rss_mb"], "-" if extra is None else extra,
             verdict, ", ".join(str(s) for s in sorted(set(run["predict_statuses"].values())))]
        )  # fmt: skip
    header = [
        "models", "ready s", "all AVAILABLE s", "gateway RSS MB", "children RSS MB",
        "total RSS MB", "MB per extra model", "<= 400 MB", ":predict statuses",
    ]  # fmt: skip
    env = r["environment"]
    lines = [
        "# Models: gateway RSS with several models served (embedded backend)",
        "",
        markdown_table(header, rows),
        "",
        f"Each model a real copy of {r['model']} ({r['model_mb_on_disk']} MB on disk); RSS"
        f" read {r['settle_s']:g} s after one one-photo :predict to each model; a fresh"
        " gateway per count. MB per extra model: (RSS_n - RSS_1) / (n - 1), of the gateway"
        " process.",
        "",
        *[f"- {k}: {'PASS' if v else 'FAIL'}" for k, v in r["checks"].items()],
        "",
        footer(env),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument(
        "--counts",
        type=int_list,
        default=[1, 2, 4],
        help="models served, one gateway each (default 1,2,4; at most 8)",
    )
    ap.add_argument("--settle-s", type=float, default=3.0)
    args = ap.parse_args()
    if max(args.counts) > len(NAMES) or min(args.counts) < 1:
        ap.error(f"--counts: 1 to {len(NAMES)}")
    result = main_run(args)
    write_report(args.out, "models", result, render(result))


if __name__ == "__main__":
    main()
