"""Protocols: one photo through TF Serving JSON, v2 JSON, v2 binary and v2 gRPC, against the
SavedModel in-process.

    python -m bench.protocols --model-dir models --images ../shared/data/imagenet-sample \
        --out bench/results

A gateway (`glimpse serve`, embedded backend, `<model-dir>/saccader/1`) on free ports; the
same photo (the first sample) sent as `serving_default` on each path: TF Serving's row form
(`{"signature_name": "serving_default", "instances": [{"input_image_bytes": {"b64": ...}}]}`),
v2 JSON (base64 text), v2 with the binary tensor data extension, and v2 gRPC (Triton's
clients for the last three). Measured: request and answer bytes on the wire (HTTP bodies;
gRPC message sizes), p50 and p90 latency over `--requests` sequential calls, and throughput at
concurrency `--concurrency` for `--seconds`; in-process is the same signature called on the
loaded SavedModel in this process. Goal (issue: Open Inference Protocol): the binary and gRPC
paths add <= 1 ms p50 over in-process.
"""

from __future__ import annotations

import base64
import json
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from bench.common import arguments, environment, footer, load_model, markdown_table, write_report
from bench.load import free_port, start_gateway


def timed(call: Callable[[], object], n: int) -> list[float]:
    call()  # warm
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def throughput(
    make_call: Callable[[], Callable[[], object]], threads: int, seconds: float
) -> tuple[float, int]:
    """Answers per second over `threads` callers, and how many calls failed."""
    done = [0] * threads
    failed = [0] * threads
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        call = make_call()
        while time.monotonic() < stop:
            try:
                call()
                done[i] += 1
            except Exception:  # noqa: BLE001  (counted: a refusal must not end the caller)
                failed[i] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done) / seconds, sum(failed)


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    import tensorflow as tf
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    photo = sorted(Path(args.images).glob("*.JPEG"))[0].read_bytes()
    env = environment()
    model = load_model(args.model_dir)
    fn = model.signatures["serving_default"]
    batch = tf.constant([photo])
    rows = {}
    in_process = timed(lambda: fn(input_image_bytes=batch), args.requests)

    port, grpc_port = free_port(), free_port()
    # Every caller's request admitted (the tensor path's default is 4 waiting per model).
    limits = {"GLIMPSE_GRPC_PORT": str(grpc_port), "GLIMPSE_TENSOR_MAX_PENDING": "64"}
    proc = start_gateway(args.model_dir, port, 64, limits)
    try:
        url = f"http://127.0.0.1:{port}"
        tfs_body = json.dumps(
            {
                "signature_name": "serving_default",
                "instances": [{"input_image_bytes": {"b64": base64.b64encode(photo).decode()}}],
            }
        ).encode()

        def tfserving_call(client: httpx.Client) -> Callable[[], object]:
            def call():
                r = client.post(f"{url}/v1/models/saccader:predict", content=tfs_body)
                r.raise_for_status()
                return r

            return call

        def v2_http(binary: bool) -> Callable[[], Callable[[], object]]:
            def make():
                client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
                image = httpclient.InferInput("input_image_bytes", [1], "BYTES")
                value = photo if binary else base64.b64encode(photo)
                image.set_data_from_numpy(np.array([value], dtype=object), binary_data=binary)
                outputs = [
                    httpclient.InferRequestedOutput(n, binary_data=binary)
                    for n in ("classes", "scores", "glimpse_boxes", "annotated_image_bytes")
                ]
                return lambda: client.infer("saccader", [image], outputs=outputs)

            return make

        def v2_grpc() -> Callable[[], object]:
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            image = grpcclient.InferInput("input_image_bytes", [1], "BYTES")
            image.set_data_from_numpy(np.array([photo], dtype=object))
            outputs = [
                grpcclient.InferRequestedOutput(n)
                for n in ("classes", "scores", "glimpse_boxes", "annotated_image_bytes")
            ]
            return lambda: client.infer("saccader", [image], outputs=outputs)

        # Bytes on the wire: one call each, measured on the bodies themselves.
        with httpx.Client(timeout=120) as c:
            answer = tfserving_call(c)()
            wire = {"TF Serving JSON": (len(tfs_body), len(answer.content))}
        for name, binary in (("v2 JSON", False), ("v2 binary", True)):
            request_body, header = httpclient.InferenceServerClient.generate_request_body(
                [_input(httpclient, photo, binary)],
                outputs=[
                    httpclient.InferRequestedOutput(n, binary_data=binary)
                    for n in ("classes", "scores", "glimpse_boxes", "annotated_image_bytes")
                ],
            )
            headers = {"Inference-Header-Content-Length": str(header)} if header else {}
            r = httpx.post(
                f"{url}/v2/models/saccader/infer",
                content=request_body,
                headers=headers,
                timeout=120,
            )
            wire[name] = (len(request_body), len(r.content))
        result = v2_grpc()()
        response = result.get_response()
        wire["v2 gRPC"] = (len(photo) + 64, response.ByteSize())  # request: photo + framing

        calls = {
            "TF Serving JSON": lambda: tfserving_call(httpx.Client(timeout=120)),
            "v2 JSON": v2_http(False),
            "v2 binary": v2_http(True),
            "v2 gRPC": v2_grpc,
        }
        for name, make in calls.items():
            latencies = timed(make(), args.requests)
            rate, failures = throughput(make, args.concurrency, args.seconds)
            rows[name] = {
                "request_bytes": wire[name][0],
                "answer_bytes": wire[name][1],
                "p50_ms": statistics.median(latencies),
                "p90_ms": float(np.percentile(latencies, 90)),
                "throughput_rps": rate,
                "failed_calls": failures,
            }
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    base = statistics.median(in_process)
    data = {"environment": env, "in_process_p50_ms": base, "protocols": rows}
    table = markdown_table(
        ["path", "request bytes", "answer bytes", "p50 ms", "p50 over in-process ms", "p90 ms",
         f"req/s at {args.concurrency}", "failed"],
        [["in-process (SavedModel)", "-", "-", f"{base:.1f}", "0", "-", "-", "-"]]
        + [
            [name, r["request_bytes"], r["answer_bytes"], f"{r['p50_ms']:.1f}",
             f"{r['p50_ms'] - base:+.1f}", f"{r['p90_ms']:.1f}", f"{r['throughput_rps']:.1f}",
             r["failed_calls"]]
            for name, r in rows.items()
        ],
    )  # fmt: skip
    md = [
        "# Protocols: one photo through each serving path",
        "",
        f"`serving_default` on one photo ({len(photo)} bytes), {args.requests} sequential calls"
        f" per path for the latencies, {args.seconds:g} s at concurrency {args.concurrency} for"
        " throughput; in-process is the same signature on the SavedModel in the benchmark's"
        " process. TF Serving's row form answers every output of the signature; the v2 paths"
        " ask for classes, scores, glimpse_boxes and annotated_image_bytes. gRPC request bytes"
        " are the photo plus framing (estimated).",
        "",
        table,
        "",
        footer(env),
    ]
    write_report(args.out, "protocols", data, "\n".join(md))


def _input(httpclient, photo: bytes, binary: bool):
    image = httpclient.InferInput("input_image_bytes", [1], "BYTES")
    value = photo if binary else base64.b64encode(photo)
    image.set_data_from_numpy(np.array([value], dtype=object), binary_data=binary)
    return image


if __name__ == "__main__":
    main()
