"""One file API over Cloud Storage (`gs://bucket/name`) and local paths (`file://` or plain).

Batch jobs read inputs, stage shards and commit outputs through this module only, so the plain
runner, the Beam pipeline and the jobs API behave the same on both. Every Cloud Storage call
goes through one retry policy (exponential backoff on connection errors, 429 and 5xx) with a
deadline from the settings: a storage outage shorter than the deadline costs time, not lines.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO

from service.errors import InvalidInput

_WILDCARD = re.compile(r"[*?\[]")


def is_gcs(path: str) -> bool:
    return path.startswith("gs://")


def _split_gcs(path: str) -> tuple[str, str]:
    bucket, _, name = path[len("gs://") :].partition("/")
    if not bucket:
        raise InvalidInput(f"{path}: no bucket name")
    return bucket, name


def _gcs_module():
    """google.cloud.storage, imported on the first gs:// path: it is the `gcs` extra, and
    local-only installs (and the gateway's start-up) never import it."""
    try:
        from google.cloud import storage
    except ImportError:
        raise InvalidInput(
            "gs:// paths need Google Cloud Storage support: pip install 'glimpse[gcs]'"
        ) from None
    return storage


def _local(path: str) -> Path:
    return Path(path[len("file://") :] if path.startswith("file://") else path)


def _replace_local(target: Path, write: Callable[[Path], object]) -> None:
    """Write beside the target, then rename over it: readers never see half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    write(tmp)
    os.replace(tmp, target)  # atomic on one filesystem


def join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def glob_regex(pattern: str) -> re.Pattern[str]:
    """gsutil wildcards: `*`, `?` and `[chars]` stay within one folder level, `**` crosses."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            chars = pattern[i + 1 : end]
            negate = chars.startswith("!")
            body = re.escape(chars[1:] if negate else chars).replace("\\-", "-")
            out, i = out + ("[^/" if negate else "[") + body + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


@dataclass(frozen=True, order=True)
class FileInfo:
    path: str
    size: int


class Storage:
    """Cloud Storage and local files behind the same few calls."""

    def __init__(
        self,
        retry_deadline_s: float = 120.0,
        timeout_s: float = 60.0,
        read_chunk_bytes: int = 8 * 1024 * 1024,
    ):
        self._deadline = retry_deadline_s
        self._timeout = timeout_s
        self._chunk = read_chunk_bytes

    @cached_property
    def _client(self):
        # Built on first use: STORAGE_EMULATOR_HOST is read here, and local-only jobs never
        # need credentials at all.
        storage = _gcs_module()
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials

            return storage.Client(
                project=os.environ.get("GOOGLE_CLOUD_PROJECT", "glimpse"),
                credentials=AnonymousCredentials(),
            )
        return storage.Client()

    @cached_property
    def _retry(self):
        _gcs_module()
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self._deadline)

    def _blob(self, path: str):
        bucket, name = _split_gcs(path)
        if not name:
            raise InvalidInput(f"{path}: no object name")
        return self._client.bucket(bucket).blob(name)

    # -- reading ---------------------------------------------------------------------------

    def expand(self, pattern: str) -> list[FileInfo]:
        """The files a path or wildcard pattern names, sorted; folders and markers skipped."""
        if not _WILDCARD.search(pattern):
            found = self.stat(pattern)
            return [found] if found else []
        if is_gcs(pattern):
            bucket, name = _split_gcs(pattern)
            prefix = _WILDCARD.split(name, 1)[0]
            regex = glob_regex(name)
            blobs = self._client.list_blobs(bucket, prefix=prefix, retry=self._retry)
            return sorted(
                FileInfo(f"gs://{bucket}/{b.name}", b.size or 0)
                for b in blobs
                if regex.match(b.name) and not b.name.endswith("/")
            )
        local = _local(pattern)
        anchor = Path(local.anchor or ".")
        relative = str(local.relative_to(anchor)) if local.is_absolute() else str(local)
        regex = glob_regex(relative)
        root = anchor / _WILDCARD.split(relative, 1)[0].rpartition("/")[0]
        found = []
        for dirpath, _, files in os.walk(root):
            for f in files:
                full = Path(dirpath) / f
                rel = str(full.relative_to(anchor)) if local.is_absolute() else str(full)
                if regex.match(rel):
                    found.append(FileInfo(str(full), full.stat().st_size))
        return sorted(found)

    def stat(self, path: str) -> FileInfo | None:
        """Size of a file, or None if there is none (one request, not exists-then-stat)."""
        if is_gcs(path):
            blob = self._blob(path)  # first: says which extra is missing
            from google.api_core.exceptions import NotFound

            try:
                blob.reload(retry=self._retry, timeout=self._timeout)
            except NotFound:
                return None
            return FileInfo(path, blob.size or 0)
        local = _local(path)
        return FileInfo(str(local), local.stat().st_size) if local.is_file() else None

    def open_read(self, path: str) -> IO[bytes]:
        """A binary stream read in chunks; each chunk download is retried on its own."""
        if is_gcs(path):
            return self._blob(path).open(
                "rb", chunk_size=self._chunk, retry=self._retry, timeout=self._timeout
            )
        return _local(path).open("rb")

    def list(self, prefix: str) -> list[str]:
        """Every file under a folder-like prefix (recursive)."""
        if is_gcs(prefix):
            bucket, name = _split_gcs(prefix)
            blobs = self._client.list_blobs(bucket, prefix=name, retry=self._retry)
            return sorted(f"gs://{bucket}/{b.name}" for b in blobs)
        root = _local(prefix)
        if not root.is_dir():
            return []
        return sorted(str(p) for p in root.rglob("*") if p.is_file())

    def list_names(self, folder: str) -> list[str]:
        """Names of the files directly in a folder (not in its subfolders)."""
        if is_gcs(folder):
            bucket, name = _split_gcs(folder)
            prefix = name.rstrip("/") + "/" if name else ""
            blobs = self._client.list_blobs(bucket, prefix=prefix, delimiter="/", retry=self._retry)
            return sorted(b.name[len(prefix) :] for b in blobs)
        root = _local(folder)
        return sorted(p.name for p in root.iterdir() if p.is_file()) if root.is_dir() else []

    # -- writing ---------------------------------------------------------------------------

    def upload(self, local_file: Path, path: str, content_type: str = "text/plain") -> None:
        """Whole-object write. Retried even without a generation precondition: every caller
        writes a name nobody else writes, so a repeated upload is harmless."""
        if is_gcs(path):
            self._blob(path).upload_from_filename(
                str(local_file), content_type=content_type, retry=self._retry,
                timeout=self._timeout,
            )  # fmt: skip
            return
        _replace_local(_local(path), lambda tmp: shutil.copyfile(local_file, tmp))

    def write_bytes(self, path: str, data: bytes, content_type: str = "application/json") -> None:
        if is_gcs(path):
            self._blob(path).upload_from_string(
                data, content_type=content_type, retry=self._retry, timeout=self._timeout
            )
            return
        _replace_local(_local(path), lambda tmp: tmp.write_bytes(data))

    def copy(self, src: str, dst: str) -> None:
        """Server-side copy into place; readers see the old object or the new one, whole."""
        if is_gcs(src) != is_gcs(dst):
            raise ValueError("copy stays within one storage system")
        if is_gcs(src):
            source = self._blob(src)
            bucket, name = _split_gcs(dst)
            source.bucket.copy_blob(
                source, self._client.bucket(bucket), name, retry=self._retry,
                timeout=self._timeout,
            )  # fmt: skip
            return
        _replace_local(_local(dst), lambda tmp: shutil.copyfile(_local(src), tmp))

    def delete(self, path: str) -> None:
        """Remove a file; one already gone is not an error (a retried delete may see that)."""
        if is_gcs(path):
            blob = self._blob(path)  # first: says which extra is missing
            from google.api_core.exceptions import NotFound

            try:
                blob.delete(retry=self._retry, timeout=self._timeout)
            except NotFound:
                pass
            return
        _local(path).unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> None:
        for path in self.list(prefix):
            self.delete(path)
        if not is_gcs(prefix):
            shutil.rmtree(_local(prefix), ignore_errors=True)
            try:  # and its parent (`_temporary/`) once no other job stages there
                _local(prefix).parent.rmdir()
            except OSError:
                pass

    def download_tree(self, prefix: str, dest: Path) -> None:
        """Copy a folder (e.g. a SavedModel) to local disk, keeping its layout."""
        base = prefix.rstrip("/") + "/"
        for path in self.list(base):
            target = dest / path[len(base) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            if is_gcs(path):
                self._blob(path).download_to_filename(
                    str(target), retry=self._retry, timeout=self._timeout
                )
            else:
                shutil.copyfile(path, target)


def iter_lines(stream: IO[bytes], max_bytes: int, chunk: int = 1 << 20) -> Iterator[bytes | int]:
    """Yield each line without its newline; a line over `max_bytes` yields its length instead.

    Reading stays bounded in memory whatever the input holds (one newline-free 5 GB file
    costs a chunk, not 5 GB). A final line without a newline still counts.
    """
    buf = bytearray()
    skipping = 0  # >0 while discarding an over-long line: bytes seen so far
    while True:
        data = stream.read(chunk)
        if not data:
            break
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                piece = data[start:]
                if skipping:
                    skipping += len(piece)
                else:
                    buf += piece
                    if len(buf) > max_bytes:
                        skipping, buf = len(buf), bytearray()
                break
            piece = data[start:nl]
            if skipping:
                yield skipping + len(piece)
                skipping = 0
            else:
                buf += piece
                yield bytes(buf) if len(buf) <= max_bytes else len(buf)
                buf = bytearray()
            start = nl + 1
    if skipping:
        yield skipping
    elif buf:
        yield bytes(buf) if len(buf) <= max_bytes else len(buf)
