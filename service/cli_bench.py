"""`glimpse bench NAME`: run a benchmark module of bench/ the way the Makefile does.

The benchmarks live in the source tree (bench/ is not part of the installed package), so this
runs `python -m bench.<name> --model-dir M --images I --out O [extra...]` with the checkout on
PYTHONPATH, in the caller's directory so that relative paths mean what the caller meant.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

ROOT = Path(__file__).resolve().parents[1]
# `make bench` runs them all (load sends 10,000 requests; faithfulness explains every method
# and takes longest), then bench.report collects the tables into docs/benchmarks.md.
BENCHMARKS = (
    "accuracy", "cost", "serve", "batch", "load", "hostile", "faithfulness", "training",
)  # fmt: skip

EXAMPLES = """
Examples:

  glimpse bench accuracy                         # as `make bench-accuracy`

  glimpse bench serve -- --seconds 5 --concurrency 1,8

  glimpse bench all --images ~/photos --out /tmp/results

  glimpse bench cost -- --help                   # the benchmark's own options

Options after `--` go to the benchmark module (with `all`, to each of them).
Results: <out>/<name>.json, .md and plots.
"""


def bench_command(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help=f"{', '.join(BENCHMARKS)} or all.", show_default=False)
    ],
    model_dir: Annotated[
        Path, typer.Option(help="Model base path holding saccader/<version>/.")
    ] = ROOT / "models",
    images: Annotated[Path, typer.Option(help="Folder of photos.")] = (
        ROOT.parent / "shared" / "data" / "imagenet-sample"
    ),
    out: Annotated[Path, typer.Option(help="Where results are written.")] = (
        ROOT / "bench" / "results"
    ),
) -> None:
    """Run a benchmark (or all of them) and write its JSON and Markdown report."""
    if name not in (*BENCHMARKS, "all"):
        raise typer.BadParameter(f"one of {', '.join(BENCHMARKS)}, all", param_hint="NAME")
    if not (ROOT / "bench" / "__init__.py").exists():
        typer.echo(f"bench/ is not in {ROOT}: run from a source checkout", err=True)
        raise typer.Exit(1)
    wants_help = "--help" in ctx.args or "-h" in ctx.args
    if not wants_help and not any(model_dir.glob("saccader/*/saved_model.pb")):
        typer.echo(
            f"no SavedModel under {model_dir}/saccader/; export it first: "
            f"glimpse export --model-dir {model_dir}",
            err=True,
        )
        raise typer.Exit(1)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    paths = ["--model-dir", str(model_dir), "--images", str(images), "--out", str(out)]
    for bench in BENCHMARKS if name == "all" else (name,):
        command = [sys.executable, "-m", f"bench.{bench}", *paths, *ctx.args]
        typer.echo(f"$ {' '.join(command)}", err=True)
        code = subprocess.run(command, env=env).returncode
        if code:
            typer.echo(f"bench {bench} failed (exit status {code})", err=True)
            raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command(
        "bench",
        epilog=EXAMPLES,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(bench_command)
