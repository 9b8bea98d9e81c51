"""Images built to cost the server: tiny files that claim huge canvases, JPEGs with thousands
of scans, PNGs whose checksums hold while their pixels are corrupt. Used by the hardening
tests and bench/hostile.py."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def gif_canvas(width: int, height: int) -> bytes:
    """A 35-byte GIF whose logical screen is width x height, with one 1x1 frame."""
    header = b"GIF89a" + struct.pack("<HH", width, height) + bytes([0x80, 0, 0])
    palette = b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00" + b"\x02\x02\x44\x01\x00"
    return header + palette + frame + b"\x3b"


def gif_frames(width: int, height: int, frames: int) -> bytes:
    """An animated GIF of `frames` 1x1 frames on a width x height canvas, 22 bytes a frame: a
    bomb for a decoder that composites every frame onto the canvas (the service decodes the
    first)."""
    still = gif_canvas(width, height)
    frame = b"\x21\xf9\x04\x00\x01\x00\x00\x00" + still[19:-1]  # delay 10 ms, then 1x1
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    return still[:19] + loop + frame * frames + b"\x3b"


def photo_like(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(seed).integers(0, 40, (height, width, 3))
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (height + width)], -1)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def jpeg_with_scans(extra_scans: int, size: tuple[int, int] = (32, 32)) -> bytes:
    """A progressive JPEG whose last scan is repeated `extra_scans` times: every decoder pass
    costs a sweep over the image, for a few bytes each."""
    buf = io.BytesIO()
    Image.fromarray(photo_like(*size)).save(buf, "JPEG", progressive=True, quality=80)
    raw = buf.getvalue()
    last = raw.rindex(b"\xff\xda")
    scan = raw[last:-2]  # SOS header and its entropy-coded data, before EOI
    return raw[:-2] + scan * extra_scans + b"\xff\xd9"


def png_corrupt_pixels(size: tuple[int, int] = (64, 64)) -> bytes:
    """A PNG whose IDAT zlib stream is corrupt while every chunk CRC is right."""
    buf = io.BytesIO()
    Image.fromarray(photo_like(*size)).save(buf, "PNG")
    raw = bytearray(buf.getvalue())
    at = raw.find(b"IDAT")
    length = struct.unpack(">I", raw[at - 4 : at])[0]
    data = bytearray(raw[at + 4 : at + 4 + length])
    data[10:30] = b"\x00" * 20
    raw[at + 4 : at + 4 + length] = data
    crc = zlib.crc32(b"IDAT" + bytes(data)) & 0xFFFFFFFF
    raw[at + 4 + length : at + 8 + length] = struct.pack(">I", crc)
    return bytes(raw)


def good_jpeg(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo_like(seed=seed)).save(buf, "JPEG", quality=90)
    return buf.getvalue()
