"""Protocols: one photo through TF Serving JSON, v2 JSON, v2 binary and v2 gRPC, against the
SavedModel in-process.

    python -m bench.protocols --model-dir models --images ../shared/data/imagenet-sample \
        --out bench/results

A gateway (`glimpse serve`, embedded backend, `<model-dir>/saccader/1`) on free ports; the
same photo (the first sample) sent as `serving_default` on each path: TF Serving's row form
(`{"signature_name": "serving_default", "instances": [{"input_image_bytes": {"b64": ...}}]}`),
v2 JSON (base64 text), v2 with the binary tensor data extension, and v2 gRPC. The v2 bodies
are built and their answers parsed by Triton's client library (`tritonclient`); the HTTP
paths share one transport (httpx) so that they differ only in what they send.

Latency at concurrency 1, in `--rounds` interleaved rounds: each round calls the SavedModel
in this process and then every path once, in an order that rotates, `--pause` apart, so a
slow minute of a shared machine slows every path alike. Two ways to read "what the gateway
adds", both medians:
- over in-process: a path's p50 minus the in-process p50 of the same rounds;
- over the model, per request: a path's latency minus the model's own time on that very
  request, which the gateway answers in `Server-Timing` (gRPC: trailing metadata): no
  second process's scheduling in it, so it is the steadier figure.
`gateway` is the gateway's own share of it (its `total` minus `model`); the rest is the
client library and the loopback. Throughput: `--concurrency` callers with Triton's own
clients for `--seconds` per path. Bytes on the wire: the HTTP bodies and the gRPC messages.
Goal (issue: Open Inference Protocol): the binary and gRPC paths add <= 1 ms p50.
"""

from __future__ import annotations

import base64
import json
import statistics
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from bench.common import arguments, environment, footer, load_model, markdown_table, write_report
from bench.load import free_port, start_gateway
from service import timing

OUTPUTS = ("classes", "scores", "glimpse_boxes", "annotated_image_bytes")


def tf_serving_body(photo: bytes) -> bytes:
    """TF Serving's row form of `serving_default` on one photo."""
    instance = {"input_image_bytes": {"b64": base64.b64encode(photo).decode()}}
    return json.dumps({"signature_name": "serving_default", "instances": [instance]}).encode()


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


class Paths:
    """One call per path, each returning the gateway's Server-Timing (ms by stage) and the
    request and answer sizes."""

    def __init__(self, photo: bytes, port: int, grpc_port: int):
        import grpc
        import tritonclient.http as httpclient
        from tritonclient.grpc import service_pb2 as pb
        from tritonclient.grpc import service_pb2_grpc as pb_grpc

        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(timeout=120)
        self.triton_http = httpclient
        self.tfs_body = tf_serving_body(photo)
        self.v2 = {binary: self._v2_body(photo, binary) for binary in (False, True)}
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{grpc_port}", options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        request = pb.ModelInferRequest(model_name="saccader")
        request.inputs.add(name="input_image_bytes", datatype="BYTES", shape=[1])
        for name in OUTPUTS:
            request.outputs.add(name=name)
        request.raw_input_contents.append(struct.pack("<I", len(photo)) + photo)
        self.grpc_request = request

    def _v2_body(self, photo: bytes, binary: bool) -> tuple[bytes, dict[str, str]]:
        client = self.triton_http
        image = client.InferInput("input_image_bytes", [1], "BYTES")
        value = photo if binary else base64.b64encode(photo)
        image.set_data_from_numpy(np.array([value], dtype=object), binary_data=binary)
        outputs = [client.InferRequestedOutput(n, binary_data=binary) for n in OUTPUTS]
        body, header = client.InferenceServerClient.generate_request_body([image], outputs=outputs)
        return body, ({"Inference-Header-Content-Length": str(header)} if header else {})

    def tf_serving(self) -> tuple[dict[str, float], int, int]:
        r = self.http.post(f"{self.url}/v1/models/saccader:predict", content=self.tfs_body)
        r.raise_for_status()
        r.json()["predictions"][0]["classes"]
        return timing.parse(r.headers["server-timing"]), len(self.tfs_body), len(r.content)

    def v2_http(self, binary: bool) -> tuple[dict[str, float], int, int]:
        body, headers = self.v2[binary]
        r = self.http.post(f"{self.url}/v2/models/saccader/infer", content=body, headers=headers)
        r.raise_for_status()
        length = r.headers.get("inference-header-content-length")
        result = self.triton_http.InferenceServerClient.parse_response_body(
            r.content, header_length=int(length) if length else None
        )
        result.as_numpy("classes")
        return timing.parse(r.headers["server-timing"]), len(body), len(r.content)

    def v2_grpc(self) -> tuple[dict[str, float], int, int]:
        from tritonclient.grpc import InferResult

        response, call = self.stub.ModelInfer.with_call(self.grpc_request)
        InferResult(response).as_numpy("classes")
        metadata = dict(call.trailing_metadata())
        size = self.grpc_request.ByteSize()
        return timing.parse(metadata["server-timing"]), size, response.ByteSize()


def triton_callers(photo: bytes, port: int, grpc_port: int) -> dict[str, Callable]:
    """Per-thread callers with Triton's own clients (geventhttpclient, grpcio) for the
    throughput runs."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    def http(binary: bool) -> Callable[[], Callable[[], object]]:
        def make():
            client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
            image = httpclient.InferInput("input_image_bytes", [1], "BYTES")
            value = photo if binary else base64.b64encode(photo)
            image.set_data_from_numpy(np.array([value], dtype=object), binary_data=binary)
            outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in OUTPUTS]
            return lambda: client.infer("saccader", [image], outputs=outputs)

        return make

    def grpc_make() -> Callable[[], object]:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        image = grpcclient.InferInput("input_image_bytes", [1], "BYTES")
        image.set_data_from_numpy(np.array([photo], dtype=object))
        outputs = [grpcclient.InferRequestedOutput(n) for n in OUTPUTS]
        return lambda: client.infer("saccader", [image], outputs=outputs)

    def tf_serving_make() -> Callable[[], object]:
        client = httpx.Client(timeout=120)
        body = tf_serving_body(photo)
        url = f"http://127.0.0.1:{port}/v1/models/saccader:predict"
        return lambda: client.post(url, content=body).raise_for_status()

    return {
        "TF Serving JSON": tf_serving_make,
        "v2 JSON": http(False),
        "v2 binary": http(True),
        "v2 gRPC": grpc_make,
    }


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--rounds", type=int, default=80)
    ap.add_argument("--pause", type=float, default=0.01, help="seconds between two calls")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    import tensorflow as tf

    photo = sorted(Path(args.images).glob("*.JPEG"))[0].read_bytes()
    env = environment()
    fn = load_model(args.model_dir).signatures["serving_default"]
    batch = tf.constant([photo])

    def in_process() -> None:
        {k: v.numpy() for k, v in fn(input_image_bytes=batch).items()}

    port, grpc_port = free_port(), free_port()
    # The gateway's defaults: image-only tensor requests share the micro-batcher's queue.
    proc = start_gateway(args.model_dir, port, 256, {"GLIMPSE_GRPC_PORT": str(grpc_port)})
    try:
        paths = Paths(photo, port, grpc_port)
        calls: dict[str, Callable[[], tuple[dict[str, float], int, int]]] = {
            "TF Serving JSON": paths.tf_serving,
            "v2 JSON": lambda: paths.v2_http(False),
            "v2 binary": lambda: paths.v2_http(True),
            "v2 gRPC": paths.v2_grpc,
        }
        names = ["in-process", *calls]
        for _ in range(3):  # warm every path and the in-process signature
            in_process()
            for call in calls.values():
                call()
        latency: dict[str, list[float]] = {n: [] for n in names}
        spans: dict[str, list[dict[str, float]]] = {n: [] for n in calls}
        wire: dict[str, tuple[int, int]] = {}
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                time.sleep(args.pause)
                started = time.perf_counter()
                if name == "in-process":
                    in_process()
                    latency[name].append((time.perf_counter() - started) * 1000)
                    continue
                stages, sent, answered = calls[name]()
                latency[name].append((time.perf_counter() - started) * 1000)
                spans[name].append(stages)
                wire[name] = (sent, answered)
        rates = {
            name: throughput(make, args.concurrency, args.seconds)
            for name, make in triton_callers(photo, port, grpc_port).items()
        }
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    base = statistics.median(latency["in-process"])
    rows: dict[str, dict] = {}
    for name in calls:
        over_model = [lat - s["model"] for lat, s in zip(latency[name], spans[name], strict=True)]
        gateway = [s["total"] - s["model"] for s in spans[name]]
        rows[name] = {
            "request_bytes": wire[name][0],
            "answer_bytes": wire[name][1],
            "p50_ms": statistics.median(latency[name]),
            "p90_ms": float(np.percentile(latency[name], 90)),
            "over_in_process_ms": statistics.median(latency[name]) - base,
            "over_model_p50_ms": statistics.median(over_model),
            "gateway_p50_ms": statistics.median(gateway),
            "model_p50_ms": statistics.median(s["model"] for s in spans[name]),
            "decode_p50_ms": statistics.median(s.get("decode", 0.0) for s in spans[name]),
            "throughput_rps": rates[name][0],
            "failed_calls": rates[name][1],
        }
    data = {
        "environment": env,
        "rounds": args.rounds,
        "in_process_p50_ms": base,
        "in_process_p90_ms": float(np.percentile(latency["in-process"], 90)),
        "protocols": rows,
    }

    def ms(value: float | None, sign: bool = False) -> str:
        return "-" if value is None else (f"{value:+.2f}" if sign else f"{value:.1f}")

    table = markdown_table(
        ["path", "request bytes", "answer bytes", "p50 ms", "p90 ms", "over in-process",
         "over the model, per request", "of it in the gateway", f"req/s at {args.concurrency}",
         "failed"],
        [["in-process (SavedModel)", "-", "-", ms(base), ms(data["in_process_p90_ms"]), "0",
          "-", "-", "-", "-"]]
        + [
            [name, r["request_bytes"], r["answer_bytes"], ms(r["p50_ms"]), ms(r["p90_ms"]),
             ms(r["over_in_process_ms"], True), ms(r["over_model_p50_ms"], True),
             ms(r["gateway_p50_ms"], True), f"{r['throughput_rps']:.1f}", r["failed_calls"]]
            for name, r in rows.items()
        ],
    )  # fmt: skip
    md = [
        "# Protocols: one photo through each serving path",
        "",
        f"`serving_default` on one photo ({len(photo)} bytes). Latency: {args.rounds} rounds at"
        " concurrency 1, each calling the SavedModel in the benchmark's process and every path"
        f" once, in rotating order, {args.pause * 1000:g} ms apart. *Over in-process*: the"
        " path's p50 minus in-process p50 of the same rounds. *Over the model, per request*:"
        " median of the path's latency minus the model's own time on that request (the"
        " gateway's `Server-Timing`); *of it in the gateway*: the gateway's `total` minus"
        " `model`, the rest being the client library and the loopback. Throughput: Triton's"
        f" clients (TF Serving: httpx), {args.concurrency} callers for {args.seconds:g} s. TF"
        " Serving's row form answers every output of the signature; the v2 paths ask for"
        " classes, scores, glimpse_boxes and annotated_image_bytes.",
        "",
        table,
        "",
        "Goal: the gateway adds <= 1 ms p50 on the binary and gRPC paths. "
        + "; ".join(
            f"{name}: {rows[name]['gateway_p50_ms']:.2f} ms in the gateway"
            f" ({'met' if rows[name]['gateway_p50_ms'] <= 1.0 else 'not met'}),"
            f" {rows[name]['over_model_p50_ms']:+.2f} ms with the client and the loopback"
            for name in ("v2 binary", "v2 gRPC")
        )
        + f". The model's own time on these requests, p50: {rows['v2 gRPC']['model_p50_ms']:.1f}"
        " ms in the gateway against the in-process p50 above, measured in the benchmark's"
        " process beside the gateway's.",
        "",
        footer(env),
    ]
    write_report(args.out, "protocols", data, "\n".join(md))


if __name__ == "__main__":
    main()
