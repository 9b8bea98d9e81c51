"""What every benchmark shares: the photo folder, the SavedModel, and the report writers."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np


def load_photos(
    folder: Path, limit: int | None = None
) -> tuple[list[bytes], np.ndarray, list[str]]:
    """Photos named `<synset>_<anything>.JPEG` -> (bytes, class indices, names)."""
    from model_export.labels import imagenet_labels

    index = {synset: i for i, (synset, _) in enumerate(imagenet_labels())}
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in {".jpeg", ".jpg"})
    if limit:
        # An even spread over the classes rather than the first N (which are all animals).
        paths = paths[:: max(1, len(paths) // limit)][:limit]
    if not paths:
        raise SystemExit(f"no photos in {folder}")
    unknown = [p.name for p in paths if p.name.split("_")[0] not in index]
    if unknown:
        raise SystemExit(f"file names must start with an ImageNet synset: {unknown[:5]}")
    labels = np.array([index[p.name.split("_")[0]] for p in paths])
    return [p.read_bytes() for p in paths], labels, [p.name for p in paths]


OPTION_MODEL = "saccader-fast"  # `make export-fast`: the cost frontier's cheapest point


def option_settings(model_dir: Path, name: str = OPTION_MODEL) -> dict[str, Any] | None:
    """The cheaper option's export settings as its model_info records them (None when it is not
    exported): the benchmarks read them rather than repeat the Makefile's flags."""
    from model_export.signatures import read_model_info

    info = read_model_info(Path(model_dir) / name / "1")
    if info is None:
        return None
    config = info["config"]
    return {"model": name, "where_size": config["where_size"], "canvas_size": config["canvas_size"]}


def load_model(model_dir: Path, name: str = "saccader", version: int = 1):
    import tensorflow as tf

    return tf.saved_model.load(str(Path(model_dir) / name / str(version)))


def environment() -> dict[str, Any]:
    import os

    import tensorflow as tf

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's command line: its docstring as help, and the three options every one
    takes (the model base, the photo folder, where results go)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=Path("models"))
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    return ap


def int_list(text: str) -> list[int]:
    """`4,64` -> [4, 64] (an option that names several runs)."""
    return [int(v) for v in text.split(",")]


def footer(env: dict[str, Any]) -> str:
    """The last line of a report: when and on what it was measured."""
    return f"{env['date']}, {env['cpus']} CPUs, TensorFlow {env['tensorflow']}."


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(out: Path, stem: str, data: dict[str, Any], markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown + "\n")
    print(markdown)
    print(f"\nwrote {out / stem}.json and .md")
