"""Cloud Storage and Apache Beam are extras (`glimpse[gcs]`, `glimpse[beam]`): the gateway and
the `glimpse` CLI start without them, and using them without the extra says what to install.

Each check runs in a fresh interpreter whose import system refuses both packages, as if they
were not installed (this virtualenv has every extra)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]

# Installed before anything else runs: `apache_beam` and `google.cloud.storage` (and their
# submodules) cannot be imported, and every attempt is recorded in BLOCKED.
_BLOCK = """
import sys

BLOCKED = []
_HIDDEN = ("apache_beam", "google.cloud.storage")


class _Missing:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if any(name == h or name.startswith(h + ".") for h in _HIDDEN):
            BLOCKED.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Missing)
"""


def _run(body: str, tmp_path: Path) -> str:
    code = _BLOCK + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_gateway_and_cli_start_without_gcs_and_beam(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    out = _run(
        f"""
        import service.app
        from service.settings import GatewaySettings

        app = service.app.create_app(GatewaySettings(model_dir={str(models)!r}, jobs_enabled=True))
        assert app.title == "Glimpse"

        import service.cli

        assert not BLOCKED, BLOCKED  # nothing even tried: no silent fallback at start-up
        print("started")
        """,
        tmp_path,
    )
    assert "started" in out


def test_gcs_path_without_the_extra_names_it(tmp_path):
    out = _run(
        """
        from service.batch.storage import Storage
        from service.errors import InvalidInput

        local = Storage().stat("pyproject.toml")  # local paths need no extra
        assert local is not None and local.size > 0
        assert not BLOCKED, BLOCKED
        for call in (
            lambda s: s.stat("gs://bucket/in.jsonl"),
            lambda s: s.expand("gs://bucket/in/*.jsonl"),
            lambda s: s.list("gs://bucket/out/"),
            lambda s: s.delete("gs://bucket/out/x"),
        ):
            try:
                call(Storage())
            except InvalidInput as e:
                assert "pip install 'glimpse[gcs]'" in e.message, e.message
            else:
                raise AssertionError("a gs:// path worked without google-cloud-storage")
        assert BLOCKED
        print("refused")
        """,
        tmp_path,
    )
    assert "refused" in out


def test_beam_runner_without_the_extra_names_it(tmp_path):
    out = _run(
        f"""
        from typer.testing import CliRunner

        import service.cli

        result = CliRunner().invoke(
            service.cli.app,
            ["batch", "submit", "--runner", "beam", "--input-paths", "in.jsonl",
             "--output-path", {str(tmp_path / "out")!r}, "--model-dir", {str(tmp_path)!r}],
            env={{"COLUMNS": "200"}},
        )
        assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
        assert "pip install 'glimpse[beam]'" in result.output, result.output
        assert "apache_beam" in BLOCKED[0], BLOCKED
        print("refused")
        """,
        tmp_path,
    )
    assert "refused" in out


def test_base_dependencies_leave_gcs_and_beam_to_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip()
                for r in requirements}  # fmt: skip

    assert not {"apache-beam", "google-cloud-storage"} & names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert "google-cloud-storage" in names(extras["gcs"])
    assert {"apache-beam", "glimpse"} <= names(extras["beam"])  # beam brings glimpse[gcs]
    assert "glimpse[gcs]" in extras["beam"]
