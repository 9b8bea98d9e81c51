"""Decode and validate instances before anything reaches the model.

Shared by the online gateway and batch jobs. Each instance becomes an `ImageInput` holding
bytes the model's in-graph decoder is known to handle: JPEG and 8/16-bit PNG in RGB or grey
pass through untouched; everything else Pillow can open (CMYK JPEG, WebP, BMP, GIF's first
frame, palette, RGBA, 16-bit grey) is converted to RGB and re-encoded as lossless PNG.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.errors import InvalidInput
from service.schemas import Instance

ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "GIF", "MPO"}
_PASSTHROUGH = {("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "L"), ("PNG", "I;16")}


@dataclass(frozen=True)
class ImageInput:
    key: str | int | float | None  # a JSON scalar, echoed back exactly as given
    data: bytes  # what the model decodes
    original_size: tuple[int, int]  # (height, width)
    converted_from: str | None  # "WEBP/RGBA" when re-encoded, None when passed through
    # Where `data` lies in the photo when a huge image was cut and shrunk while converted:
    # original pixels per pixel of `data`, and the (top, left) of its first pixel.
    scale: float = 1.0
    offset: tuple[float, float] = (0.0, 0.0)


# The model looks at the central square (224/256 of the shorter side) resampled to 224 and 448
# pixels, so it needs that square and a shorter side of 512 at most (448 * 256 / 224). Images
# the gateway re-encodes anyway and that are larger than this many pixels are cut to their
# central square and shrunk (by whole factors, box-averaged), so that the model's thread and
# memory are spared megapixels it would throw away; the boxes are mapped back to the photo.
SHRINK_ABOVE_PIXELS = 16_000_000
_NEEDED_SHORT_SIDE = 512


@dataclass
class DecodeBudget:
    """What decoding one request (or one batch line) may cost, checked from the headers before
    any pixel is decoded, so that a few bytes cannot buy seconds of CPU or gigabytes of memory.

    - `pixels`: pixels the gateway itself may decode for the whole request (formats it converts,
      PNGs it checks), summed over the instances: 40 tiny GIFs with huge canvases are refused
      after the budget, not decoded one after the other.
    - `max_jpeg_scans`: scans one JPEG may have. Decoding cost grows with scans x pixels (each
      progressive scan passes over the whole image), and JPEGs are decoded by the model on its
      own thread, so a JPEG with thousands of empty scans would stall every request behind it.
      Encoders write at most a few dozen (libjpeg's progressive script: 10; mozjpeg: < 30).
    - `max_jpeg_scan_pixels`: scans x pixels of one JPEG, what its decoding costs (about 4 ns
      each here: 400 million is under 2 s), so a huge progressive JPEG is refused too.
    """

    pixels: int
    max_jpeg_scans: int = 64
    max_jpeg_scan_pixels: int = 400_000_000
    spent: int = 0
    # Runs `decode_pixels` (fn, *args) where the caller wants it for images over
    # `run_above_pixels`: a process pool in the gateway. Smaller ones (milliseconds) and all
    # of them when None: in this thread.
    run: Callable[..., Any] | None = None
    run_above_pixels: int = 4_000_000

    def charge(self, pixels: int, where: str) -> None:
        if self.spent + pixels > self.pixels:
            raise InvalidInput(
                f"{where}: decoding it would pass this request's budget of {self.pixels} pixels"
                f" ({self.spent} spent on earlier instances); send fewer or smaller images"
            )
        self.spent += pixels


@dataclass(frozen=True)
class DecodeLimits:
    """The decode limits an operator sets (GLIMPSE_MAX_IMAGE_PIXELS, ...), one value for the
    gateway and batch lines alike; `budget()` starts one request's (or one line's) account."""

    image_pixels: int = 40_000_000
    request_pixels: int = 50_000_000
    jpeg_scans: int = 64
    jpeg_scan_pixels: int = 400_000_000

    @classmethod
    def of(cls, settings: Any) -> DecodeLimits:
        return cls(
            settings.max_image_pixels,
            settings.max_decode_pixels,
            settings.max_jpeg_scans,
            settings.max_jpeg_scan_pixels,
        )

    def budget(self, **where: Any) -> DecodeBudget:
        """`where`: DecodeBudget's `run` and `run_above_pixels`."""
        return DecodeBudget(self.request_pixels, self.jpeg_scans, self.jpeg_scan_pixels, **where)


_STANDALONE = {0x01, *range(0xD0, 0xD9)}  # TEM, RSTn, SOI: no length field


def jpeg_scans(raw: bytes) -> int:
    """Start-of-scan markers in a JPEG. The segments before the first scan are walked (so a
    thumbnail inside an APP segment is skipped with it); after it, entropy-coded data never
    holds 0xFF 0xDA (byte stuffing), so the remaining markers are counted at C speed."""
    i, n = 2, len(raw)
    while i + 4 <= n:
        if raw[i] != 0xFF:
            return 0  # not at a marker: malformed, left to the decoder to reject
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:  # EOI before any scan
            return 0
        if marker in _STANDALONE:
            i += 2
            continue
        if marker == 0xDA:  # the bytes after each 0xFF (~1% of them): 4x bytes.count's speed
            data = np.frombuffer(raw, np.uint8, offset=i)
            after = np.flatnonzero(data[:-1] == 0xFF) + 1
            return int(np.count_nonzero(data[after] == 0xDA))
        i += 2 + int.from_bytes(raw[i + 2 : i + 4], "big")
    return 0


def explain_validation(errors: list[dict]) -> str:
    """pydantic's errors as one line: `instances[2].input_image_bytes: Field required`."""
    parts = []
    for e in errors:
        loc = ""
        for item in e["loc"]:
            if item == "body" and not loc:
                continue
            loc += f"[{item}]" if isinstance(item, int) else (f".{item}" if loc else str(item))
        # pydantic prefixes what a validator raised ("Value error, ..."): the message alone.
        msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if e.get("type") == "json_invalid":  # its loc is a character offset, not a field
            loc = ""
            msg = f"JSON Parse error: {e.get('ctx', {}).get('error', msg)}"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request body"


def b64decode(text: str) -> bytes:
    """base64 as clients send it: padded or not, the standard or the URL-safe alphabet (one
    rule for every form that carries bytes: instances, TF Serving's tensors, v2 JSON).
    ValueError when it is none of these."""
    padded = text + "=" * (-len(text) % 4)
    for altchars in (None, b"-_"):
        try:
            return base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
    raise ValueError("invalid base64")


def _b64decode(text: str, where: str) -> bytes:
    try:
        return b64decode(text)
    except ValueError:
        raise InvalidInput(f"{where}: invalid base64") from None


def decode_instance(
    instance: Instance,
    max_pixels: int,
    name: str = "instance",
    budget: DecodeBudget | None = None,
) -> ImageInput:
    """One instance -> model-ready bytes; errors start with `name` (`instances[3]`, ...).

    `max_pixels` bounds any one image (from its header); `budget` what the gateway decodes
    for the whole request (None: one image's worth)."""
    where = f"{name}.input_image_bytes"
    raw = _b64decode(instance.input_image_bytes.b64, where)
    return decode_image(raw, instance.key, max_pixels, where, budget)


def decode_image(
    raw: bytes,
    key: str | int | float | None,
    max_pixels: int,
    where: str,
    budget: DecodeBudget | None = None,
) -> ImageInput:
    """Encoded bytes -> model-ready bytes; errors start with `where`."""
    budget = budget or DecodeBudget(max_pixels)
    if not raw:
        raise InvalidInput(f"{where}: empty image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            if image.format not in ALLOWED_FORMATS:
                raise InvalidInput(f"{where}: unsupported image format {image.format}")
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidInput(
                    f"{where}: {width}x{height} pixels is over the limit of {max_pixels}"
                )
            if width < 1 or height < 1:
                raise InvalidInput(f"{where}: image has no pixels")
            image.seek(0)
            fmt = "JPEG" if image.format == "MPO" else image.format
            if fmt == "JPEG":
                scans = jpeg_scans(raw)
                if scans > budget.max_jpeg_scans:
                    raise InvalidInput(
                        f"{where}: JPEG with more than {budget.max_jpeg_scans} scans (decoding"
                        " cost grows with each); re-encode it"
                    )
                if scans * width * height > budget.max_jpeg_scan_pixels:
                    raise InvalidInput(
                        f"{where}: {width}x{height} JPEG in {scans} scans is over the decoding"
                        f" budget of {budget.max_jpeg_scan_pixels} scan-pixels; re-encode it"
                        " baseline or smaller"
                    )
            passthrough = (fmt, image.mode) in _PASSTHROUGH and not getattr(
                image, "is_animated", False
            )
            if passthrough and fmt == "PNG" and width * height > SHRINK_ABOVE_PIXELS:
                passthrough = False  # re-encoded smaller: the model need not inflate it all
            if passthrough and fmt == "JPEG" and _intact_jpeg(raw):
                return ImageInput(key, raw, (height, width), None)
            draft = passthrough and fmt == "JPEG"
            if draft:
                # Decode at 1/8 scale in the DCT domain: reads the whole stream, so truncated
                # data still fails, for a fraction of the cost of a full decode.
                budget.charge(max(1, width * height // 64), where)
            else:
                # PNGs are decoded here too: a chunk's CRC can hold while its zlib stream is
                # corrupt, and the model would then fail without naming the image.
                budget.charge(width * height, where)
            try:
                far = budget.run is not None and width * height > budget.run_above_pixels
                run = budget.run if far else _run_here
                converted = run(decode_pixels, raw, draft, passthrough)
            except InvalidInput as e:
                raise InvalidInput(f"{where}: {e.message}") from None
    except InvalidInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow refuses dimensions far over its own limit before our check sees them.
        raise InvalidInput(
            f"{where}: image size is over the limit of {max_pixels} pixels"
        ) from None
    except UnidentifiedImageError:
        raise InvalidInput(f"{where}: not a decodable image (JPEG, PNG, WebP, BMP, GIF)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise InvalidInput(f"{where}: corrupt or truncated image ({e})") from None
    if converted is None:
        return ImageInput(key, raw, (height, width), None)
    data, scale, offset = converted
    return ImageInput(key, data, (height, width), f"{fmt}/{image.mode}", scale, offset)


def _run_here(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def decode_pixels(
    raw: bytes, draft: bool, passthrough: bool
) -> tuple[bytes, float, tuple[float, float]] | None:
    """The pixel work: decode (truncated or corrupt data fails here), then re-encode as PNG
    unless the bytes pass through (None). A top-level function of bytes, so that the gateway
    can run it in a process of its own (service/decoding.py): megapixels of work there hold
    neither the event loop nor the model's thread, whatever locks the imaging code takes."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(raw))
        image.seek(0)
        if draft:
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
    return None if passthrough else _to_png(image)


def _intact_jpeg(raw: bytes) -> bool:
    """A structural check that lets a well-formed JPEG skip Pillow's pixel decode: the stream
    ends with the EOI marker (truncation removes it). One that fails is decoded fully, so its
    error names the instance; the rare one that passes and still breaks the model's decoder
    fails only its own request (the backend re-runs the batch one instance at a time)."""
    return raw.rstrip(b"\x00")[-2:] == b"\xff\xd9"


def _to_png(image: Image.Image) -> tuple[bytes, float, tuple[float, float]]:
    """RGB PNG bytes of `image`, with the shrink factor (1.0: full size) and the offset of
    the part kept ((0, 0): all of it)."""
    offset = (0.0, 0.0)
    huge = image.width * image.height > SHRINK_ABOVE_PIXELS
    if huge:
        side = min(image.size)
        top, left = (image.height - side) // 2, (image.width - side) // 2
        image = image.crop((left, top, left + side, top + side))
        offset = (float(top), float(left))
    alpha = image.mode in ("RGBA", "LA", "P", "PA")
    if alpha:
        image = image.convert("RGBA")
    elif image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 257).convert("RGB")
    else:
        image = image.convert("RGB")
    width = image.width
    factor = min(image.size) // _NEEDED_SHORT_SIDE
    if huge and factor > 1:
        image = image.reduce(factor)
    if alpha:
        # Transparent pixels become white, as a viewer would show them, not black.
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue(), width / image.width, offset


def decode_instances(
    instances: list[Instance], max_pixels: int, budget: DecodeBudget | None = None
) -> list[ImageInput]:
    """Every instance or none: one bad instance fails the request, naming its index."""
    budget = budget or DecodeBudget(max_pixels)
    return [
        decode_instance(inst, max_pixels, f"instances[{i}]", budget)
        for i, inst in enumerate(instances)
    ]


def decode_images(
    raws: list[bytes], max_pixels: int, budget: DecodeBudget, where: Callable[[int], str]
) -> list[ImageInput]:
    """Encoded images already out of their JSON (TF Serving's tensor forms), image i named
    `where(i)` in errors, all or none."""
    return [decode_image(raw, None, max_pixels, where(i), budget) for i, raw in enumerate(raws)]
