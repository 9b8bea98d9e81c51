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
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from service.errors import InvalidInput
from service.schemas import Instance

ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "GIF", "MPO"}
_PASSTHROUGH = {("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "L"), ("PNG", "I;16")}


@dataclass(frozen=True)
class ImageInput:
    key: str | None
    data: bytes  # what the model decodes
    original_size: tuple[int, int]  # (height, width)
    converted_from: str | None  # "WEBP/RGBA" when re-encoded, None when passed through


def explain_validation(errors: list[dict]) -> str:
    """pydantic's errors as one line: `instances[2].input_image_bytes: Field required`."""
    parts = []
    for e in errors:
        loc = ""
        for item in e["loc"]:
            if item == "body" and not loc:
                continue
            loc += f"[{item}]" if isinstance(item, int) else (f".{item}" if loc else str(item))
        msg = e["msg"]
        if e.get("type") == "json_invalid":  # its loc is a character offset, not a field
            loc = ""
            msg = f"JSON Parse error: {e.get('ctx', {}).get('error', msg)}"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request body"


def _b64decode(text: str, where: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    for altchars in (None, b"-_"):  # Some clients send the URL-safe alphabet.
        try:
            return base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
    raise InvalidInput(f"{where}: invalid base64")


def decode_instance(instance: Instance, max_pixels: int, name: str = "instance") -> ImageInput:
    """One instance -> model-ready bytes; errors start with `name` (`instances[3]`, ...)."""
    where = f"{name}.input_image_bytes"
    raw = _b64decode(instance.input_image_bytes.b64, where)
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
            passthrough = (fmt, image.mode) in _PASSTHROUGH and not getattr(
                image, "is_animated", False
            )
            if passthrough and _intact(raw, fmt):
                return ImageInput(instance.key, raw, (height, width), None)
            if passthrough and fmt == "JPEG":
                # Decode at 1/8 scale in the DCT domain: reads the whole stream, so truncated
                # data still fails, for half the cost of a full decode.
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()  # decodes: truncated or corrupt data fails here
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
    if passthrough:
        return ImageInput(instance.key, raw, (height, width), None)
    return ImageInput(instance.key, _to_png(image), (height, width), f"{fmt}/{image.mode}")


def _intact(raw: bytes, fmt: str) -> bool:
    """A structural check that lets a well-formed image skip Pillow's pixel decode.

    JPEG: the stream ends with the EOI marker (truncation removes it). PNG: every chunk's CRC
    holds up to IEND (`verify()` reads chunks, not pixels). Anything that fails the check is
    decoded fully, so its error names the instance; the rare image that passes and still
    breaks the model's decoder fails only its own request (the backend re-runs the batch one
    instance at a time).
    """
    if fmt == "JPEG":
        return raw.rstrip(b"\x00")[-2:] == b"\xff\xd9"
    if fmt == "PNG":
        try:  # on its own object: verify() leaves the image it checked unusable
            Image.open(io.BytesIO(raw)).verify()
        except Exception:  # noqa: BLE001 - any failure means "decode it fully"
            return False
        return True
    return False


def _to_png(image: Image.Image) -> bytes:
    if image.mode in ("RGBA", "LA", "P", "PA"):
        # Transparent pixels become white, as a viewer would show them, not black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(background, rgba).convert("RGB")
    elif image.mode in ("I;16", "I;16B", "I;16L", "I"):
        rgb = image.point(lambda v: v / 257).convert("RGB")
    else:
        rgb = image.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_instances(instances: list[Instance], max_pixels: int) -> list[ImageInput]:
    """Every instance or none: one bad instance fails the request, naming its index."""
    return [
        decode_instance(inst, max_pixels, f"instances[{i}]") for i, inst in enumerate(instances)
    ]
