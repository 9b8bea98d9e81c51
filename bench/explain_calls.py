"""What the explain path's smaller model calls cost the explanations.

    python -m bench.explain_calls --model-dir models --images ../shared/data/imagenet-sample

Every model call of an explanation is one turn on the model's scheduler, so its length is what
a prediction arriving meanwhile waits for: the calls are at most 10 gradient rows and 16
logits rows or glimpse sets (~0.2 s of Lite0 on 2 cores), where they were 25, 32 and 64
(up to ~0.75 s). This runs each method on the same photos, in one process, with the calls of
today and with the earlier sizes, and reports the median seconds per explanation and the
largest difference between the two maps (the same arithmetic in other batches: ~1e-7, but
SmoothGrad, whose noise is drawn afresh each run).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from bench.common import arguments, environment, footer, load_photos, markdown_table, write_report
from bench.faithfulness import offline_model
from service.explain import methods
from service.explain import model as explain_model
from service.explain.model import Budget
from service.explain.schemas import ExplainParameters

METHODS = ["glimpses", "sag", "integrated_gradients", "smoothgrad", "occlusion", "xrai", "blur_ig"]
EARLIER = {"gradient rows": 25, "logits rows": 32, "glimpse sets": 64}


def _sizes() -> dict[str, int]:
    return {
        "gradient rows": methods.BATCH,
        "logits rows": explain_model._LOGITS_CHUNK,
        "glimpse sets": explain_model._SETS_CHUNK,
    }


def _set(sizes: dict[str, int]) -> None:
    methods.BATCH = sizes["gradient rows"]
    explain_model._LOGITS_CHUNK = sizes["logits rows"]
    explain_model._SETS_CHUNK = sizes["glimpse sets"]


def _run(model, images: list[bytes], params: dict) -> tuple[dict, dict]:
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    maps = {}
    for i, image in enumerate(images):
        for m in METHODS:
            start = time.perf_counter()
            maps[i, m] = methods.attribute(model, image, params[m], Budget()).map
            seconds[m].append(time.perf_counter() - start)
    return {m: statistics.median(s) for m, s in seconds.items()}, maps


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--limit", type=int, default=8)
    args = ap.parse_args()

    images, _, _ = load_photos(args.images, limit=args.limit)
    model = offline_model(args.model_dir / "saccader" / "1")
    params = {m: ExplainParameters(method=m) for m in METHODS}
    for m in METHODS:  # trace every signature once
        methods.attribute(model, images[0], params[m], Budget())
    today = _sizes()
    now, now_maps = _run(model, images, params)
    _set(EARLIER)
    before, before_maps = _run(model, images, params)
    _set(today)

    rows, data = [], {}
    for m in METHODS:
        gap = max(
            float(np.abs(now_maps[i, m] - before_maps[i, m]).max())
            / (float(np.abs(before_maps[i, m]).max()) or 1.0)
            for i in range(len(images))
        )
        data[m] = {"earlier_s": before[m], "today_s": now[m], "max_map_difference": gap}
        rows.append(
            [m, f"{before[m] * 1000:.0f}", f"{now[m] * 1000:.0f}", f"{now[m] / before[m]:.2f}",
             f"{gap:.1e}"]
        )  # fmt: skip
    sizes = lambda s: "/".join(str(s[k]) for k in EARLIER)  # noqa: E731
    markdown = "\n\n".join(
        [
            f"# Explanations with smaller model calls ({len(images)} photos, medians, one run)",
            f"Calls of at most {sizes(today)} gradient rows / logits rows / glimpse sets (today)"
            f" against {sizes(EARLIER)} (earlier), same photos, same process.",
            markdown_table(
                ["method", "ms, earlier calls", "ms, today's calls", "ratio", "max map difference"],
                rows,
            ),
            footer(environment()),
        ]
    )
    write_report(
        args.out,
        "explain_calls",
        {"sizes": {"today": today, "earlier": EARLIER}, "methods": data, "env": environment()},
        markdown,
    )


if __name__ == "__main__":
    main()
