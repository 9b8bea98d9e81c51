"""Every explanation method, one row each: adding a method is adding a row here (and its code).

The request schema (the `method` enum, which options apply), the admission check (cost,
signedness), the drawing defaults and the dispatch all read these rows, so they cannot drift
apart. A row holds the function that computes its method, so a method cannot be offered
without one, nor dispatched anywhere but to it. That makes this module import
service/explain/methods.py, and service/explain/schemas.py builds its enum from this one: so
neither this module nor methods.py imports the schema at run time, and methods.py looks the
rows up when asked, never at import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from service.explain import sag
from service.explain.methods import (
    Compute,
    blur_ig,
    glimpse_attribution,
    grad_cam,
    guided_backprop,
    integrated_gradients,
    occlusion,
    post_hoc,
    sag_attribution,
    vanilla_gradients,
    xrai,
)

if TYPE_CHECKING:
    from service.explain.schemas import ExplainParameters

# Rows per image a run costs beyond the method's own passes (the view's logits and the
# baseline scores); the estimate has always allowed this margin.
_OVERHEAD = 3


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    explained_model: Literal["glimpses", "full_image"]
    # Rows the attribution itself runs per image, faithfulness apart: the request limit
    # refuses a request before any work starts.
    cost: Callable[[ExplainParameters], int]
    # Whether the map has a negative side; for path methods it depends on SmoothGrad.
    signed: bool | Callable[[ExplainParameters], bool]
    compute: Compute  # the method itself: what a request for it runs
    smoothable: bool = False  # SmoothGrad averages noisy gradients: meaningless elsewhere
    default_steps: int | None = None  # None: `steps` does not apply
    region: bool = False  # a map of regions, drawn as Vertex draws XRAI

    def is_signed(self, params: ExplainParameters) -> bool:
        return self.signed(params) if callable(self.signed) else self.signed


def _glimpse_sets(params: ExplainParameters) -> int:
    """The prediction, then each glimpse alone and all the others without it."""
    t = params.num_glimpses
    return 1 + (2 * t if t > 1 else 1)


def _sag_cost(params: ExplainParameters) -> int:
    t = params.num_glimpses
    if t <= sag.EXACT_MAX_GLIMPSES:
        search = sag.exact_evaluations(t)
    else:
        search = params.sag_beam_width * t * t  # successors of each beam level
    return _glimpse_sets(params) + search


def _post_hoc_cost(rows: Callable[[ExplainParameters], int]) -> Callable[[ExplainParameters], int]:
    """A full-image method's passes, repeated for each SmoothGrad sample."""

    def cost(params: ExplainParameters) -> int:
        samples = params.smoothgrad_samples if params.smoothed else 1
        return rows(params) * samples + _OVERHEAD

    return cost


def _one(params: ExplainParameters) -> int:
    return 1


def _steps(params: ExplainParameters) -> int:
    return params.integration_steps


def _occluded(params: ExplainParameters) -> int:
    if params.occlusion_regions == "superpixels":
        return params.occlusion_superpixels
    return (params.occlusion_grid - params.occlusion_window + 1) ** 2


def _signed_unless_squared(params: ExplainParameters) -> bool:
    """SmoothGrad's averaged squares lose the path integral's sign."""
    return not (params.smoothed and params.smoothgrad_magnitude)


# The order is the API's: the `method` enum of the JSON schema lists them so.
REGISTRY: tuple[MethodSpec, ...] = (
    MethodSpec(
        "glimpses",
        "Where the model looked, in order, and what each glimpse is worth.",
        "glimpses",
        cost=lambda p: _glimpse_sets(p) + _OVERHEAD,
        # Admission lets every polarity through, though the map (a ranking) is never negative.
        signed=True,
        compute=glimpse_attribution,
        region=True,
    ),
    MethodSpec(
        "vanilla_gradients",
        "Gradient of the class logit with respect to the pixels.",
        "full_image",
        cost=_post_hoc_cost(_one),
        signed=False,
        compute=post_hoc(vanilla_gradients),
        smoothable=True,
    ),
    MethodSpec(
        "guided_backprop",
        "Gradient with the ReLU6 gradients gated to positive signals.",
        "full_image",
        cost=_post_hoc_cost(_one),
        signed=False,
        compute=post_hoc(guided_backprop),
        smoothable=True,
    ),
    MethodSpec(
        "integrated_gradients",
        "Gradients integrated along a path from a plain baseline image.",
        "full_image",
        cost=_post_hoc_cost(_steps),
        signed=_signed_unless_squared,
        compute=post_hoc(integrated_gradients),
        smoothable=True,
        default_steps=50,
    ),
    MethodSpec(
        "blur_ig",
        "Gradients integrated along a path from a blurred copy of the image.",
        "full_image",
        cost=_post_hoc_cost(_steps),
        signed=_signed_unless_squared,
        compute=post_hoc(blur_ig),
        smoothable=True,
        default_steps=100,
    ),
    MethodSpec(
        "smoothgrad",
        "Vanilla gradients averaged over noisy copies of the image.",
        "full_image",
        cost=_post_hoc_cost(_one),
        signed=False,
        compute=post_hoc(vanilla_gradients),
    ),
    MethodSpec(
        "grad_cam",
        "Last convolution layer's activations weighted by their gradients.",
        "full_image",
        cost=_post_hoc_cost(_one),
        signed=False,
        compute=post_hoc(grad_cam),
        region=True,
    ),
    MethodSpec(
        "xrai",
        "Integrated gradients from black and white, summed over image segments.",
        "full_image",
        cost=_post_hoc_cost(lambda p: 2 * p.integration_steps),
        signed=True,
        compute=post_hoc(xrai),
        default_steps=100,
        region=True,
    ),
    MethodSpec(
        "occlusion",
        "Logit drop when each grid window or superpixel is filled.",
        "full_image",
        cost=_post_hoc_cost(_occluded),
        signed=True,
        compute=post_hoc(occlusion),
        region=True,
    ),
    MethodSpec(
        "sag",
        "Structured attention graph: the minimal glimpse sets that keep the decision.",
        "glimpses",
        cost=_sag_cost,
        signed=True,
        compute=sag_attribution,
        region=True,
    ),
)
SPECS: dict[str, MethodSpec] = {spec.name: spec for spec in REGISTRY}
NAMES: tuple[str, ...] = tuple(SPECS)
# What the API documents for `method`: each row's own description.
METHOD_HELP = " ".join(f"`{s.name}`: {s.description}" for s in REGISTRY)
SMOOTHABLE: frozenset[str] = frozenset(s.name for s in REGISTRY if s.smoothable)
DEFAULT_STEPS: dict[str, int] = {
    s.name: s.default_steps for s in REGISTRY if s.default_steps is not None
}
REGION_METHODS: frozenset[str] = frozenset(s.name for s in REGISTRY if s.region)
