"""Training jobs on the jobs API: `trainingInput.args` are `glimpse train`'s arguments.

The gateway runs the same Trainer as the CLI (model_export/training/trainer.py), in a worker
thread of its own (TensorFlow releases the GIL), writing the new version into the gateway's
own model base; the data plane's poll then serves it like any new version folder. What a
client may not choose here: the model base (`--model-base`), the feature cache
(`--cache-dir`) and Beam (`--runner beam`, pipeline options after `--`): those are the
gateway's, or a job of their own.

Photos and import files are read as batch jobs read their inputs: gs:// anywhere, local paths
only under GLIMPSE_JOBS_LOCAL_ROOT, so a job cannot train on (or probe for) the gateway's own
files. The import file is read once before training to check the photos' paths (a second pass
over a streamed file, cheap beside feature extraction).
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from service.errors import InvalidInput

FIELD = "trainingInput.args"
# model_export/backbone.py VARIANTS (importing it would import Keras into the create path).
BACKBONES = ("lite0", "tiny")
# `glimpse train`'s options as a job takes them, and those it refuses (the gateway's own);
# tests/test_train_jobs.py holds these to the CLI's options.
OPTIONS = (
    "--model-name", "--version", "--seed", "--max-bad-fraction", "--backbone", "--runner",
    "--quiet", "--no-quiet",
)  # fmt: skip
REFUSED = {
    "--model-base": "the gateway trains into its own model base (GLIMPSE_MODEL_DIR); leave it out",
    "--cache-dir": "the gateway keeps its own feature cache (GLIMPSE_FEATURE_CACHE); leave it out",
}
_BEAM = "the gateway runs no Beam pipeline: run `glimpse train --runner beam` yourself"

Progress = Callable[[str, int, int], None]  # (stage, photos done, photos total)


@dataclass(frozen=True)
class TrainArgs:
    """A job's `glimpse train` arguments, checked."""

    import_file: str
    model_name: str
    version: int | None = None
    seed: int = 0
    max_bad_fraction: float = 0.05
    backbone: str = "lite0"


@dataclass
class Trained:
    """What a finished run reports into the job's trainingOutput."""

    path: Path  # the version folder
    splits: dict[str, int] = field(default_factory=dict)
    bad_lines: int = 0
    bad_photos: int = 0
    duplicates: int = 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage and exit
        raise InvalidInput(f"{FIELD}: {message.removeprefix('argument ')}")


def _number(text: str, kind: type) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _seed(text: str) -> int:
    return int(_number(text, int))


def _version(text: str) -> int:
    number = int(_number(text, int))
    if not 1 <= number < 2**63:
        raise argparse.ArgumentTypeError(f"{text!r}: a version is 1 or more")
    return number


def _fraction(text: str) -> float:
    value = float(_number(text, float))
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: a fraction from 0 to 1")
    return value


def _parser() -> _Parser:
    p = _Parser(prog="glimpse train", add_help=False, allow_abbrev=False)
    p.add_argument("import_file", nargs="?")  # nargs, required: checked after unknowns
    p.add_argument("--model-name")
    p.add_argument("--version", type=_version)
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--max-bad-fraction", type=_fraction, default=0.05)
    p.add_argument("--backbone", choices=BACKBONES, default="lite0")
    p.add_argument("--runner", choices=("local", "beam"), default="local")
    p.add_argument("--quiet", "--no-quiet", nargs=0, action=_Ignored)  # no progress bar here
    for name in REFUSED:
        p.add_argument(name)
    return p


class _Ignored(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None) -> None:
        pass


def parse_args(args: list[str]) -> TrainArgs:
    """`glimpse train`'s arguments -> TrainArgs; InvalidInput naming what is wrong: every
    unknown option at once, or the option the gateway keeps for itself."""
    if "--" in args:
        raise InvalidInput(f"{FIELD}: pipeline options after `--` are for --runner beam: {_BEAM}")
    given, extra = _parser().parse_known_args(args)
    unknown = [a.split("=", 1)[0] for a in extra if a.startswith("-")]
    if unknown:
        raise InvalidInput(
            f"{FIELD}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
            f" (options: {', '.join(OPTIONS[:-2])})"
        )
    if extra:
        raise InvalidInput(
            f"{FIELD}: unexpected argument {extra[0][:200]!r}: `glimpse train` takes one"
            " import file"
        )
    if given.import_file is None:
        raise InvalidInput(f"{FIELD}: the import file (the first argument) is missing")
    if given.model_name is None:
        raise InvalidInput(f"{FIELD}: --model-name is required")
    for name, why in REFUSED.items():
        if getattr(given, name[2:].replace("-", "_")) is not None:
            raise InvalidInput(f"{FIELD}: {name}: {why}")
    if given.runner == "beam":
        raise InvalidInput(f"{FIELD}: --runner beam: {_BEAM}")
    return TrainArgs(
        import_file=given.import_file,
        model_name=given.model_name,
        version=given.version,
        seed=given.seed,
        max_bad_fraction=given.max_bad_fraction,
        backbone=given.backbone,
    )


def _allowed(uri: str, root: Path | None) -> bool:
    if uri.startswith("gs://"):
        return True
    return root is not None and Path(uri).resolve().is_relative_to(root.resolve())


def check_photos(import_file: str, seed: int, root: Path | None) -> None:
    """Every photo the import file names is on gs:// or under the jobs folder (TrainingError
    otherwise, by line number); DatasetError when the file cannot train a model."""
    from model_export.training.import_file import read_import_file
    from model_export.training.trainer import TrainingError

    report = read_import_file(import_file, seed=seed)
    outside = [e.line for e in report.examples if not _allowed(e.uri, root)]
    if outside:
        lines = ", ".join(str(n) for n in outside[:10]) + (", ..." if len(outside) > 10 else "")
        where = "under the jobs folder" if root is not None else "(local paths are off)"
        raise TrainingError(
            f"{len(outside)} photos are local paths a job may not read (lines {lines}): photos"
            f" must be on gs:// or {where}"
        )


def train(spec, on_progress: Progress, cancel: threading.Event):
    """The Trainer's run (tests put a stand-in here)."""
    from model_export.training.trainer import Trainer

    return Trainer(spec, on_progress, cancel).run()


def target_folder(spec) -> Path:
    """Where the job's version goes: `--version`, else a new model's version 1."""
    return Path(spec.model_base) / spec.model_name / str(spec.version or 1)


def already_written(spec, since: str) -> Trained | None:
    """The version an earlier attempt of this job wrote, if the gateway restarted between the
    rename into place and the job's end: written after `since` (that attempt's start) from
    the same import file, seed and backbone. A rerun is then done, not a clash."""
    from model_export.training.evaluation import EVALUATION_DIR

    target = target_folder(spec)
    try:
        info = json.loads((target / EVALUATION_DIR / "training.json").read_text())
        written = target.stat().st_mtime
        started = datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
    except (OSError, ValueError):
        return None
    same = (
        info.get("import_file") == spec.import_file
        and info.get("seed") == spec.seed
        and f"-{spec.backbone} " in str(info.get("backbone", ""))
    )
    if not same or written < started - 0.001:
        return None
    return Trained(
        path=target,
        splits=info.get("splits", {}),
        bad_lines=len(info.get("bad_lines", [])),
        bad_photos=len(info.get("bad_images", [])),
        duplicates=int(info.get("duplicates", 0)),
    )


def run(
    spec,
    root: Path | None,
    resumed_since: str | None,
    on_progress: Progress,
    cancel: threading.Event,
) -> Trained:
    """One job's training, in the worker thread: the photo paths checked, then the Trainer.
    Raises TrainingError, DatasetError (the job FAILS with the message) or Cancelled.
    `resumed_since`: the start of the attempt a restart interrupted, if any."""
    from model_export.training.trainer import Cancelled, TrainingError, target_version

    if resumed_since is not None:
        try:
            target_version(spec)
        except TrainingError:
            done = already_written(spec, resumed_since)
            if done is not None:
                return done
            raise
    check_photos(spec.import_file, spec.seed, root)
    if cancel.is_set():
        raise Cancelled("training cancelled")
    report = train(spec, on_progress, cancel)
    return Trained(
        path=Path(report.path),
        splits=dict(report.counts),
        bad_lines=report.bad_lines,
        bad_photos=len(report.bad_images),
        duplicates=report.duplicates,
    )
