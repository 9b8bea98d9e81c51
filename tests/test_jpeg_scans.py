"""The JPEG scan count the decode budget rests on (service/instances.py: jpeg_scans), against
Pillow's own encoder: baseline, progressive, restart markers, a thumbnail's scan skipped."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.instances import jpeg_scans

pytestmark = pytest.mark.fast


def _jpeg(**options) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    buf = io.BytesIO()
    image.save(buf, "JPEG", **options)
    return buf.getvalue()


def _scans_after_first(raw: bytes) -> int:
    """The slow, obvious count: every FF DA from the first scan on."""
    return raw.count(b"\xff\xda", raw.index(b"\xff\xda"))


@pytest.mark.parametrize(
    "options",
    [{}, {"progressive": True}, {"progressive": True, "quality": 95}, {"restart_marker_rows": 1}],
)
def test_scans_match_the_markers(options):
    raw = _jpeg(**options)
    assert jpeg_scans(raw) == _scans_after_first(raw)
    assert (jpeg_scans(raw) > 1) == bool(options.get("progressive"))


def test_a_thumbnail_in_an_app_segment_is_not_counted():
    thumbnail = _jpeg(progressive=True)
    main = _jpeg()
    # An APP1 segment holding a whole progressive JPEG (as EXIF thumbnails are), before the
    # main image's own segments.
    app1 = b"\xff\xe1" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail
    raw = main[:2] + app1 + main[2:]
    assert jpeg_scans(raw) == 1
    assert Image.open(io.BytesIO(raw)).size == (160, 120)


def test_malformed_streams_count_no_scan():
    assert jpeg_scans(b"\xff\xd8\xff\xd9") == 0  # EOI first
    assert jpeg_scans(b"\xff\xd8\x00\x00\x00\x00") == 0  # not at a marker
    assert jpeg_scans(b"\xff\xd8\xff\xda") == 0  # cut at the marker: the decoder fails it
