"""Attribution map -> picture, with AI Platform / Vertex visualisation settings.

Steps: optional blur; keep the polarity asked for; scale magnitudes between the lower and upper
clip percentiles to 0..1; colour (pink_green / red_green: green for evidence for the class,
pink or red against; viridis: magnitude only); draw as pixels or as outlines of the regions
that survive the lower clip; place over nothing, the photo, its grey version, or show the photo
only where the map is (mask_black). saliency's VisualizeImageGrayscale is not used because it
divides by (max - min) and returns NaN for an all-zero map; the scaling here returns black.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy.ndimage import binary_dilation, gaussian_filter
from skimage.segmentation import find_boundaries

from service.errors import InvalidInput
from service.explain.registry import REGION_METHODS
from service.explain.schemas import VisualizationConfig

_VIRIDIS = np.array(  # matplotlib's viridis at 11 evenly spaced points, interpolated below
    [
        (68, 1, 84),
        (72, 36, 117),
        (65, 68, 135),
        (53, 95, 141),
        (42, 120, 142),
        (33, 145, 140),
        (34, 168, 132),
        (68, 191, 112),
        (122, 209, 81),
        (189, 223, 38),
        (253, 231, 37),
    ],
    np.float64,
)
_TWO_COLOURS = {  # (for the class, against it); the pink and green ends of matplotlib's PiYG
    "pink_green": ((77, 146, 33), (197, 27, 125)),
    "red_green": ((0, 200, 0), (220, 0, 0)),
}
_SHADE = 0.35  # opacity inside outlines


def resolve(config: VisualizationConfig, method: str) -> VisualizationConfig:
    """Fill the unset fields with the method's defaults (documented in docs/explain.md)."""
    region = method in REGION_METHODS  # drawn like Vertex draws XRAI
    return config.model_copy(
        update={
            "clip_below_percentile": (
                config.clip_below_percentile
                if config.clip_below_percentile is not None
                else (0.0 if region else 62.0)
            ),
            "clip_above_percentile": (
                config.clip_above_percentile
                if config.clip_above_percentile is not None
                else (100.0 if region else 99.9)
            ),
            "color_map": config.color_map or ("viridis" if region else "pink_green"),
        }
    )


def check_polarity(config: VisualizationConfig, signed: bool, method: str) -> None:
    if not signed and config.polarity != "positive":
        raise InvalidInput(
            f"{method} gives magnitudes, which have no negative side;"
            " use visualization.polarity=positive"
        )


def scaled(amap: np.ndarray, config: VisualizationConfig) -> tuple[np.ndarray, np.ndarray]:
    """(intensity 0..1, sign +1/-1) per pixel after blur, polarity and percentile clipping."""
    a = gaussian_filter(amap, config.blur_sigma) if config.blur_sigma else amap
    if config.polarity == "positive":
        magnitude = np.maximum(a, 0.0)
    elif config.polarity == "negative":
        magnitude = np.maximum(-a, 0.0)
    else:
        magnitude = np.abs(a)
    sign = np.where(a < 0, -1.0, 1.0)
    lo, hi = np.percentile(magnitude, [config.clip_below_percentile, config.clip_above_percentile])
    if hi > lo:
        intensity = np.clip((magnitude - lo) / (hi - lo), 0.0, 1.0)
    else:  # a flat map: show where it is non-zero, never divide by zero
        intensity = (magnitude > lo).astype(np.float64)
    return intensity, sign


def _colours(intensity: np.ndarray, sign: np.ndarray, cmap: str) -> np.ndarray:
    if cmap == "viridis":
        pos = intensity * (len(_VIRIDIS) - 1)
        low = np.floor(pos).astype(int).clip(0, len(_VIRIDIS) - 2)
        t = (pos - low)[..., None]
        return _VIRIDIS[low] * (1.0 - t) + _VIRIDIS[low + 1] * t
    good, bad = (np.array(c, np.float64) for c in _TWO_COLOURS[cmap])
    return np.where(sign[..., None] > 0, good, bad)


def _background(view: np.ndarray, overlay: str) -> np.ndarray:
    if overlay == "grayscale":
        grey = view @ np.array([0.299, 0.587, 0.114])
        return np.repeat(grey[..., None], 3, axis=-1)
    if overlay in ("original", "mask_black"):
        return view.astype(np.float64)
    return np.zeros_like(view, np.float64)


def render_array(view: np.ndarray, amap: np.ndarray, config: VisualizationConfig) -> np.ndarray:
    """uint8 [H, W, 3] picture of the map; `config` must be resolved."""
    intensity, sign = scaled(amap, config)
    colour = _colours(intensity, sign, config.color_map or "viridis")
    base = _background(view, config.overlay_type)
    alpha = config.overlay_multiplier if config.overlay_type in ("original", "grayscale") else 1.0
    if config.type == "pixels":
        if config.overlay_type == "mask_black":
            out = base * intensity[..., None]
        else:
            weight = (alpha * intensity)[..., None]
            if config.color_map == "viridis" and config.overlay_type == "none":
                weight = np.ones_like(weight)  # viridis' dark end is its zero, not black
            out = base * (1.0 - weight) + colour * weight
    else:
        region = intensity > 0.0
        edge = binary_dilation(find_boundaries(region, mode="inner"))
        if config.overlay_type == "mask_black":
            out = np.where(region[..., None], base, 0.0)
        else:
            shade = np.where(region, _SHADE * max(alpha, 0.5), 0.0)[..., None]
            out = base * (1.0 - shade) + colour * shade
        out = np.where(edge[..., None], colour, out)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    else:
        Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def render(view: np.ndarray, amap: np.ndarray, config: VisualizationConfig) -> bytes:
    return encode(render_array(view, amap, config), config.output_format)
