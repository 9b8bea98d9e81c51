"""Python client for Glimpse: predictions with their glimpses, explanations, and batch jobs.

    from glimpse_client import Client

    with Client("http://127.0.0.1:8080") as client:
        p = client.predict("cat.jpg", num_glimpses=4)
        print(p.top_class.label, p.coverage, [g.box for g in p.glimpses])
        p.save_annotated("cat-glimpses.png")

Works against the Glimpse gateway and against TF Serving's REST API serving the exported
SavedModel (predictions only); see docs/client.md. Depends on httpx and pydantic only.
"""

from glimpse_client.client import Client, image_bytes
from glimpse_client.errors import (
    Conflict,
    ConnectionFailed,
    GlimpseError,
    InvalidRequest,
    JobTimeout,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    ServerError,
    Timeout,
    Unauthorized,
    Unavailable,
    Unsupported,
    UnsupportedMediaType,
)
from glimpse_client.explanation import Explanation, LabelAttribution
from glimpse_client.jobs import Job, JobOutput
from glimpse_client.models import (
    Box,
    ClassScore,
    Glimpse,
    ModelMetadata,
    ModelStatus,
    Prediction,
    Preprocessing,
)

__all__ = [
    "Box",
    "ClassScore",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Explanation",
    "Glimpse",
    "GlimpseError",
    "InvalidRequest",
    "Job",
    "JobOutput",
    "JobTimeout",
    "LabelAttribution",
    "ModelMetadata",
    "ModelStatus",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "Prediction",
    "Preprocessing",
    "ServerError",
    "Timeout",
    "Unauthorized",
    "Unavailable",
    "Unsupported",
    "UnsupportedMediaType",
    "image_bytes",
]
