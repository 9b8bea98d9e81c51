"""Request and response bodies of `:explain`.

The response keeps the legacy AI Platform shape (`explanations[].attributions_by_label[]` with
`attributions`, `baseline_score`, `example_score`, `label_index`, `output_name`, `approx_error`,
the image as `{"b64_jpeg": ...}`), so the Explainable AI SDK's parser reads it; everything
else (faithfulness, glimpses, the attention graph, timings) is added beside those keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.explain.registry import DEFAULT_STEPS, METHOD_HELP, NAMES, SMOOTHABLE
from service.schemas import _TINY_PNG, DEFAULT_SIGNATURES, Box, Instance

# Built from the registry, so a new row is a new enum value; the registry's order is the API's.
Method = Literal[NAMES]  # type: ignore[valid-type]
METHODS: tuple[str, ...] = NAMES

MAX_STEPS = 300
MAX_SAMPLES = 100


class VisualizationConfig(BaseModel):
    """How the attribution becomes a picture; names and values follow AI Platform / Vertex.

    Unset fields take per-method defaults (see docs/explain.md): Vertex's own defaults where
    it has them (polarity positive, clip 62..99.9 percentile for pixel attributions, overlay
    none), viridis for region methods (XRAI, Grad-CAM, occlusion, glimpses) as Vertex does for
    XRAI, pink_green for gradient methods.
    """

    model_config = ConfigDict(extra="forbid")
    type: Literal["pixels", "outlines"] = "pixels"
    polarity: Literal["positive", "negative", "both"] = "positive"
    clip_below_percentile: float | None = Field(None, ge=0.0, le=100.0)
    clip_above_percentile: float | None = Field(None, ge=0.0, le=100.0)
    color_map: Literal["pink_green", "red_green", "viridis"] | None = None
    overlay_type: Literal["none", "original", "grayscale", "mask_black"] = "none"
    overlay_multiplier: float = Field(
        0.7, ge=0.0, le=1.0, description="Opacity of the colours over the photo."
    )
    output_format: Literal["jpeg", "png"] = "jpeg"
    blur_sigma: float = Field(
        0.0, ge=0.0, le=20.0, description="Gaussian blur of the map before drawing (pixels)."
    )

    @model_validator(mode="after")
    def _clip_order(self) -> VisualizationConfig:
        lo, hi = self.clip_below_percentile, self.clip_above_percentile
        if lo is not None and hi is not None and lo >= hi:
            raise ValueError("clip_below_percentile must be below clip_above_percentile")
        return self


class ExplainParameters(BaseModel):
    """Options for the whole request. Unknown names are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")
    method: Method = Field("glimpses", description=f"The explanation method. {METHOD_HELP}")
    label_index: int | None = Field(
        None,
        ge=0,
        description="Class to explain (an index into the model's labels: 0..999 for ImageNet,"
        " 0..K-1 for a model trained on K labels of your own); default: the model's top.",
    )
    num_glimpses: int = Field(
        6, ge=1, description="Glimpses (glimpses and sag), up to the model's `max_glimpses`."
    )
    steps: int | None = Field(
        None,
        ge=1,
        le=MAX_STEPS,
        description="Integration steps: IG 50 (AI Platform's default), XRAI and Blur IG 100.",
    )
    baseline: Literal["black", "white", "grey"] | None = Field(
        None, description="IG baseline (default black) or occlusion fill (default grey)."
    )
    blur_max_sigma: float = Field(50.0, gt=0.0, le=200.0, description="Blur IG's end point.")
    xrai_algorithm: Literal["full", "fast"] = "full"
    smoothgrad: bool = Field(False, description="Average the gradient method over noisy copies.")
    smoothgrad_samples: int = Field(25, ge=1, le=MAX_SAMPLES)
    smoothgrad_stdev_spread: float = Field(0.15, gt=0.0, le=1.0)
    smoothgrad_magnitude: bool = Field(True, description="Average squared gradients.")
    occlusion_regions: Literal["grid", "superpixels"] = "grid"
    occlusion_grid: int = Field(7, ge=2, le=28, description="Cells per side of the grid.")
    occlusion_window: int = Field(1, ge=1, le=4, description="Occluder side, in cells.")
    occlusion_superpixels: int = Field(50, ge=4, le=200, description="SLIC segments wanted.")
    sag_threshold: float = Field(
        0.9, gt=0.0, le=1.0, description="Sufficient: keeps this fraction of full confidence."
    )
    sag_max_roots: int = Field(3, ge=1, le=10, description="Diverse minimal sets shown.")
    sag_beam_width: int = Field(5, ge=1, le=20, description="Beam search above 8 glimpses.")
    sag_expand_threshold: float = Field(
        0.4, ge=0.0, le=1.0, description="Expand a node only above this relative confidence."
    )
    faithfulness: bool = Field(
        True,
        description=(
            "Sufficiency and necessity of the map's top cells at the glimpses' area, judged by"
            " the full-image classifier (2 model runs)."
        ),
    )
    faithfulness_area: float | None = Field(
        None,
        ge=0.01,
        le=1.0,
        description="Fraction of the view the top cells cover; default: the glimpses' coverage.",
    )
    pixel_curves: bool = Field(
        False, description="Also the pixel deletion/insertion curves (2 x (steps + 1) runs)."
    )
    faithfulness_steps: int = Field(16, ge=2, le=64, description="Points of the pixel curves.")
    attribution_map: bool = Field(False, description="Also return the raw 224x224 map.")
    visualization: VisualizationConfig = Field(default_factory=VisualizationConfig)

    @model_validator(mode="after")
    def _consistent(self) -> ExplainParameters:
        if self.smoothgrad and self.method not in SMOOTHABLE:
            raise ValueError(
                f"smoothgrad modifies a gradient method ({', '.join(sorted(SMOOTHABLE))}),"
                f" not {self.method}"
            )
        if self.steps is not None and self.method not in DEFAULT_STEPS:
            raise ValueError(f"steps applies to {', '.join(DEFAULT_STEPS)}, not {self.method}")
        if self.occlusion_window >= self.occlusion_grid:
            raise ValueError("occlusion_window must be smaller than occlusion_grid")
        return self

    @property
    def smoothed(self) -> bool:
        return self.smoothgrad or self.method == "smoothgrad"

    @property
    def integration_steps(self) -> int:
        return self.steps or DEFAULT_STEPS.get(self.method, 1)


class ExplainRequest(BaseModel):
    """`instances` as for :predict; `parameters` chooses the method and its settings.
    Explanations are of the default signature: TF Serving's tensor forms are :predict's."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "instances": [{"input_image_bytes": {"b64": _TINY_PNG}, "key": "photo-1"}],
                    "parameters": {
                        "method": "integrated_gradients",
                        "steps": 50,
                        "visualization": {"overlay_type": "original"},
                    },
                }
            ]
        },
    )

    instances: list[Instance] = Field(min_length=1)
    parameters: ExplainParameters = Field(default_factory=ExplainParameters)
    signature_name: str | None = Field(None, description="Only the default signature.")

    @field_validator("signature_name")
    @classmethod
    def _default_signature_only(cls, v: str | None) -> str | None:
        if v not in DEFAULT_SIGNATURES:
            raise ValueError("explanations are of the default signature (serving_default)")
        return v


class ImageBytes(BaseModel):
    """The rendered attribution, as the XAI SDK reads it (`b64_jpeg`; `b64_png` on request)."""

    b64_jpeg: str | None = None
    b64_png: str | None = None


class Faithfulness(BaseModel):
    """How faithful the map is, judged by the full-image classifier at equal area: its
    top-ranked 8x8 cells covering `area` of the view are kept with the rest blurred
    (sufficiency) or blurred themselves (necessity). See docs/explain.md."""

    metric: Literal["equal_area_cells"] = "equal_area_cells"
    area: float = Field(description="Fraction of the view in the top cells.")
    blur_sigma: float = Field(description="Gaussian blur of the removed part, view pixels.")
    full_probability: float = Field(description="Class probability on the whole view.")
    full_class: int = Field(description="The full-image classifier's top-1 on the whole view.")
    sufficiency_probability: float = Field(description="... with only the top cells sharp.")
    sufficiency_class: int = Field(description="Its top-1 with only the top cells sharp.")
    sufficiency_keeps_prediction: bool = Field(
        description="The full-image top-1 class survives with only the top cells sharp."
    )
    necessity_drop: float = Field(description="Class probability lost with the cells blurred.")
    necessity_class: int = Field(description="Its top-1 with the top cells blurred.")
    necessity_changes_prediction: bool = Field(
        description="The full-image top-1 class changes with the top cells blurred."
    )
    pixel_deletion_auc: float | None = Field(
        None, description="Pixel deletion (RISE): greyed top pixels; lower is better."
    )
    pixel_insertion_auc: float | None = Field(
        None, description="Pixel insertion (RISE): top pixels on grey; higher is better."
    )
    pixel_deletion_curve: list[float] | None = None
    pixel_insertion_curve: list[float] | None = None
    steps: int | None = Field(None, description="Points of the pixel curves, minus one.")


class GlimpseAttribution(BaseModel):
    """One glimpse and what the model says when re-run on it alone and without it."""

    order: int = Field(description="1 for the first glimpse taken.")
    box: Box = Field(description="In pixels of the 224x224 view.")
    probability: float = Field(
        description="The class's probability from this glimpse's pixels alone (as :predict"
        " with glimpse_boxes=[box] gives it)."
    )
    without: float = Field(
        description="The class's probability from all the other glimpses, without this one."
    )
    drop: float = Field(description="Probability from all glimpses minus `without`.")
    new_pixels: float = Field(description="Fraction of its pixels no earlier glimpse covered.")


class SagNode(BaseModel):
    id: int
    glimpses: list[int] = Field(description="Orders of the glimpses kept.")
    confidence: float = Field(
        description="Probability of the class from these glimpses alone: the model re-run on"
        " exactly their pixels (:predict with glimpse_boxes gives the same)."
    )
    relative_confidence: float = Field(description="confidence / full confidence.")
    minimal_sufficient: bool = Field(description="Sufficient, and no glimpse can be dropped.")


class SagEdge(BaseModel):
    source: int
    target: int
    removed: int = Field(description="Order of the glimpse dropped from source to target.")
    drop: float = Field(description="Loss of relative confidence, 0..1.")


class StructuredAttentionGraph(BaseModel):
    threshold: float
    full_confidence: float
    search: Literal["exact", "beam"]
    minimal_sufficient_sets: list[list[int]] = Field(
        description="Every minimal sufficient set found, smallest first (orders)."
    )
    roots: list[list[int]] = Field(description="The diverse subset drawn as graph roots.")
    nodes: list[SagNode]
    edges: list[SagEdge]
    image: ImageBytes


class AttributionMap(BaseModel):
    shape: tuple[int, int]
    values: list[list[float]]


class LabelAttribution(BaseModel):
    """One `attributions_by_label` entry: the legacy keys first, then ours."""

    attributions: dict[str, ImageBytes] = Field(
        description="Input name -> the rendered attribution over the 224x224 view."
    )
    baseline_score: float
    example_score: float
    label_index: int
    label_name: str
    output_name: str = Field(description="`logits` of the explained model.")
    approx_error: float | None = Field(
        None, description="Completeness gap |sum - (example - baseline)| / |example - baseline|."
    )
    synset: str
    probability: float
    explained_model: Literal["glimpses", "full_image"]
    method: str
    faithfulness: Faithfulness | None = None
    glimpses: list[GlimpseAttribution] | None = None
    sag: StructuredAttentionGraph | None = None
    attribution_map: AttributionMap | None = None
    visualization: VisualizationConfig = Field(description="The settings used, defaults filled.")


class Explanation(BaseModel):
    key: str | int | float | None = None  # the instance's key, as given
    attributions_by_label: list[LabelAttribution]
    model_evaluations: int = Field(
        description="Images the model ran on (forward, or forward and backward) for this one."
    )
    timing_ms: dict[str, float] = Field(description="attribution, faithfulness, visualization.")


class ExplainResponse(BaseModel):
    explanations: list[Explanation]
