"""Batch prediction throughput: storage emulator -> predictions -> storage emulator.

    python -m bench.batch --model-dir models --images ../shared/data/imagenet-sample

End to end (`glimpse batch submit`'s runner: list and read JSON lines from a real
gcp-storage-emulator process, validate, predict with the embedded backend, encode, stage and
commit the shards back to the emulator) against raw batched in-process throughput (the
SavedModel's `serving_options` signature called on the same photos, already in memory, in
batches of the same size). Rounds alternate between the two so that drift hits both alike;
medians over rounds. Writes batch.json and batch.md under --out.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import tensorflow as tf

from bench.common import (
    arguments,
    environment,
    load_model,
    load_photos,
    markdown_table,
    write_report,
)


def raw_throughput(sm, images: list[bytes], batch: int) -> float:
    fn = sm.signatures["serving_options"]
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        part = images[i : i + batch]
        out = fn(
            input_image_bytes=tf.constant(part),
            num_glimpses=tf.constant([6] * len(part), tf.int32),
            top_k=tf.constant([5] * len(part), tf.int32),
        )
        _ = {k: v.numpy() for k, v in out.items()}
    return len(images) / (time.perf_counter() - start)


async def end_to_end(settings, spec) -> tuple[float, dict]:
    from service.backends.embedded import EmbeddedPredictor
    from service.batch.runner import run_job

    predictor = EmbeddedPredictor(settings)
    await predictor.start()
    try:
        report = await run_job(spec, predictor, settings)
    finally:
        await predictor.close()
    if report.state != "SUCCEEDED" or not report.balanced:
        raise SystemExit(f"batch job failed: {report}")
    return report.lines / report.seconds, report.model_dump()


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--limit", type=int, default=None, help="photos to use (default: all)")
    ap.add_argument("--files", type=int, default=4, help="input files the lines are split over")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64, help="job batch size (lines)")
    ap.add_argument("--workers", type=int, default=2, help="job max worker count")
    args = ap.parse_args()

    from google.cloud import storage

    from service.batch.spec import JobSpec
    from service.settings import GatewaySettings
    from tests.gcs_emulator import GcsEmulator

    images, _, names = load_photos(args.images, limit=args.limit)
    settings = GatewaySettings(model_dir=args.model_dir, log_format="text")
    emulator = GcsEmulator(Path(tempfile.mkdtemp(prefix="bench-gcs-")))
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.host
    emulator.start()
    try:
        from google.auth.credentials import AnonymousCredentials

        client = storage.Client(project="bench", credentials=AnonymousCredentials())
        bucket = client.create_bucket("bench")
        per_file = -(-len(images) // args.files)
        for f in range(args.files):
            rows = [
                json.dumps({"input_image_bytes": {"b64": base64.b64encode(b).decode()}, "key": n})
                for b, n in zip(images[f * per_file : (f + 1) * per_file],
                                names[f * per_file : (f + 1) * per_file], strict=True)
            ]  # fmt: skip
            bucket.blob(f"in/part-{f:02d}.jsonl").upload_from_string("\n".join(rows) + "\n")
        input_mb = sum(b.size for b in client.list_blobs("bench", prefix="in/")) / 1e6

        sm = load_model(args.model_dir)
        raw_throughput(sm, images[:32], settings.max_batch_size)  # trace and warm up
        raw, e2e, reports = [], [], []
        for r in range(args.rounds):
            raw.append(raw_throughput(sm, images, settings.max_batch_size))
            spec = JobSpec(
                input_paths=["gs://bench/in/*.jsonl"], output_path=f"gs://bench/out-{r}",
                batch_size=args.batch_size, max_worker_count=args.workers,
            )  # fmt: skip
            rate, report = asyncio.run(end_to_end(settings, spec))
            e2e.append(rate)
            reports.append(report)
            print(f"round {r + 1}: raw {raw[-1]:.1f} img/s, end to end {rate:.1f} img/s")
        output_mb = sum(b.size for b in client.list_blobs("bench", prefix="out-0/")) / 1e6
    finally:
        emulator.kill()

    med_raw, med_e2e = statistics.median(raw), statistics.median(e2e)
    data = {
        "environment": environment(),
        "images": len(images),
        "input_files": args.files,
        "input_mb": round(input_mb, 1),
        "output_mb": round(output_mb, 1),
        "model_batch": settings.max_batch_size,
        "job_batch_size": args.batch_size,
        "job_workers": args.workers,
        "raw_images_per_s": raw,
        "end_to_end_images_per_s": e2e,
        "median_raw": med_raw,
        "median_end_to_end": med_e2e,
        "ratio": med_e2e / med_raw,
        "last_report": reports[-1],
    }
    md = "\n".join(
        [
            f"# Batch prediction throughput ({len(images)} photos, {args.rounds} alternating"
            " rounds, medians)",
            "",
            markdown_table(
                ["path", "images/s"],
                [
                    [f"raw in-process, batches of {settings.max_batch_size}", f"{med_raw:.1f}"],
                    [
                        f"end to end: emulator -> {args.files} files -> predictions (T=6, "
                        f"annotated picture) -> {reports[-1]['shards']} shards -> emulator",
                        f"{med_e2e:.1f}",
                    ],
                    ["end to end / raw", f"{med_e2e / med_raw:.2f}x"],
                ],
            ),
            "",
            f"Input {input_mb:.1f} MB of JSON lines, output {output_mb:.1f} MB per run.",
        ]
    )
    write_report(args.out, "batch", data, md)


if __name__ == "__main__":
    main()
