"""Settings of the hard-attention model that are fixed at export time.

Variants are data (big_vision style): `SaccaderConfig(variant="tiny")` is the seconds-to-export
model for tests, the default is the product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from model_export.contract import VIEW_SIZE  # the classifier's view (boxes are in its pixels)

Policy = Literal["cam", "ordered_logits", "random", "centre", "sobel"]
POLICIES: tuple[str, ...] = ("cam", "ordered_logits", "random", "centre", "sobel")

RESIZE_SHORTER = 256  # reference preprocessing: shorter side to 256, centre crop 224


@dataclass(frozen=True)
class SaccaderConfig:
    variant: str = "lite0"
    policy: Policy = "cam"
    # Side of a glimpse in view pixels. 64 px (8% of the view) is the largest size at which six
    # glimpses can each add at least 55% new pixels and still see at most a third of the view
    # (64^2 x (1 + 5 x 0.55) = 15,360 px^2 <= 224^2 / 3); smaller glimpses leave more holes in
    # the evidence (docs/model.md has the curve).
    glimpse_size: int = 64
    grid_stride: int = 8  # candidate positions every 8 px, as the paper's 19x19 BagNet grid
    # The focus region: the first rows x cols glimpses tile the rectangle with the most
    # evidence, row_step / col_step apart (either orientation). 2 x 3 tiles of 64 px, 48 and
    # 40 px apart, make a 112 x 144 region (32% of the view): compact regions classify far
    # better than scattered squares of the same area (grey holes and seams cost the canvas
    # 3-5 points of top-1 on the dev photos).
    tile_rows: int = 2
    tile_cols: int = 3
    tile_row_step: int = 48
    tile_col_step: int = 40
    # Glimpses after the focus region go to the box with the most evidence not yet seen among
    # those touching what was seen that add at least this fraction of new pixels.
    min_new_fraction: float = 0.55
    # The promise "at the default T the model saw at most a third of the photo": the focus
    # region must fit in it (checked below); more glimpses than the default may see more.
    max_coverage: float = 1.0 / 3.0
    # What path: the union of glimpses is cut from the high-resolution view onto a canvas of
    # this size (pixels outside every glimpse set to the normalisation mean) and classified in
    # one pass; the logits average the canvas's location logits over the seen part.
    canvas_size: int = 224
    hires_size: int = 448  # the centre-crop region of the original photo, resampled once
    # The where pass's input side: the view resampled (area) to this many pixels before the
    # backbone places the glimpses. 224 is the default; smaller is cheaper and places them
    # worse (docs/model.md, "The cost frontier").
    where_size: int = VIEW_SIZE
    # The annotated picture's encoding. JPEG (quality 90, no chroma subsampling) takes a seventh
    # of PNG's encoding time in the graph and a sixth of its bytes; PNG is exact.
    annotated_format: Literal["png", "jpeg"] = "jpeg"
    default_glimpses: int = 6
    max_glimpses: int = 16
    default_top_k: int = 5
    max_top_k: int = 20
    seed: int = 0  # only the random policy uses it

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; choose one of {POLICIES}")
        if not 16 <= self.glimpse_size <= VIEW_SIZE:
            raise ValueError("glimpse_size must lie in [16, 224]")
        if not 0.0 < self.max_coverage <= 1.0:
            raise ValueError("max_coverage must lie in (0, 1]")
        steps = (self.glimpse_size, self.tile_row_step, self.tile_col_step)
        if VIEW_SIZE % self.grid_stride or any(v % self.grid_stride for v in steps):
            raise ValueError("grid_stride must divide 224, glimpse_size and the tile steps")
        if self.hires_size % (VIEW_SIZE // self.grid_stride):
            raise ValueError("hires_size must be a multiple of 224 / grid_stride")
        if not 1 <= self.default_glimpses <= self.max_glimpses:
            raise ValueError("default_glimpses must lie in [1, max_glimpses]")
        if not 0 < self.tile_row_step <= self.glimpse_size >= self.tile_col_step > 0:
            raise ValueError("tile steps must lie in (0, glimpse_size]: tiles must touch")
        if max(self.focus_shape) > VIEW_SIZE:
            raise ValueError("the focus region must fit in the view")
        if self.focus_shape[0] * self.focus_shape[1] > self.max_coverage * VIEW_SIZE**2:
            raise ValueError("the focus region must not cover more than max_coverage")
        if not 0.0 <= self.min_new_fraction <= 1.0:
            raise ValueError("min_new_fraction must lie in [0, 1]")
        if not 64 <= self.where_size <= VIEW_SIZE or self.where_size % 32:
            raise ValueError("where_size must be a multiple of 32 in [64, 224]")
        if not 64 <= self.canvas_size <= 448 or self.canvas_size % 32:
            raise ValueError("canvas_size must be a multiple of 32 in [64, 448]")
        if self.annotated_format not in ("png", "jpeg"):
            raise ValueError("annotated_format must be png or jpeg")

    @property
    def grid_points(self) -> int:
        """Candidate positions per axis; every candidate box lies inside the view."""
        return (VIEW_SIZE - self.glimpse_size) // self.grid_stride + 1

    @property
    def focus_shape(self) -> tuple[int, int]:
        """(height, width) in view pixels of the region the first tiles cover."""
        g = self.glimpse_size
        return (
            g + (self.tile_rows - 1) * self.tile_row_step,
            g + (self.tile_cols - 1) * self.tile_col_step,
        )
