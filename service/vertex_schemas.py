"""Vertex AI's online prediction bodies (google/cloud/aiplatform/v1), and how the gateway's own
answers map onto them.

Vertex's names are camelCase on the wire (the proto JSON names); the Python attributes are
snake_case with camelCase aliases, so dump with `by_alias=True`. Google's clients parse these
bodies into protos and drop keys the proto does not define, so what a GAPIC or SDK user must
see sits in Vertex's own fields (`predictions` and `featureAttributions` are free JSON); the
gateway's other explanation keys are added beside Vertex's for clients reading the JSON.

The explanation mapping (docs/gateway.md, "Vertex AI"), per instance, from the gateway's one
`attributions_by_label` entry (service/explain/schemas.py):

| Vertex `Attribution`  | the gateway's explanation                                         |
|-----------------------|-------------------------------------------------------------------|
| `outputIndex`         | `[label_index]`, the class explained (the top one unless asked)   |
| `outputDisplayName`   | `label_name`                                                      |
| `outputName`          | `output_name`: `logits`, the output the scores are taken from     |
| `instanceOutputValue` | `example_score`: the class's logit on the instance                |
| `baselineOutputValue` | `baseline_score`: its logit at the method's baseline (glimpses:   |
|                       | no glimpse seen, zero logits)                                     |
| `approximationError`  | `approx_error`, the completeness gap of path methods (IG, Blur IG,|
|                       | XRAI); absent where the method reports none (proto readers: 0)    |
| `featureAttributions` | `{"input_image_bytes": {"b64_jpeg"|"b64_png": the rendered map,   |
|                       | "glimpses": [per-glimpse probability, without, drop, ...],        |
|                       | "attribution_map": {"shape", "values"} when asked}}`              |

Logits, not probabilities, because the attributions are of the logit: for path methods they
sum to about `instanceOutputValue - baselineOutputValue`, Vertex's completeness relation. The
probability is beside them (`probability`), and in `predictions`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ConfigDict, Field, PrivateAttr, RootModel, model_validator

from service.explain.schemas import (
    ExplainParameters,
    Explanation,
    Faithfulness,
    LabelAttribution,
    StructuredAttentionGraph,
    VisualizationConfig,
)
from service.instances import b64decode
from service.schemas import GoogleJson, Instance, Prediction, PredictParameters, PredictRequest


class VertexPredictRequest(GoogleJson):
    """`endpoints/{e}:predict`'s body. Unknown names are a 400, as Google's APIs answer."""

    model_config = ConfigDict(extra="forbid")
    instances: list[Instance] = Field(min_length=1)
    parameters: PredictParameters = Field(default_factory=PredictParameters)


class VertexExplainRequest(GoogleJson):
    """`endpoints/{e}:explain`'s body: `parameters` choose the method, as on the ml v1 route."""

    model_config = ConfigDict(extra="forbid")
    instances: list[Instance] = Field(min_length=1)
    parameters: ExplainParameters = Field(default_factory=ExplainParameters)
    deployed_model_id: str | None = Field(
        None, description="Must name the one deployed model, if given."
    )
    explanation_spec_override: dict[str, Any] | None = Field(
        None, description="Not supported: choose the method in `parameters.method`."
    )


class VertexPredictResponse(GoogleJson):
    predictions: list[Prediction] = Field(
        description="The gateway's :predict object for each instance, in order."
    )
    deployed_model_id: str
    model: str = Field(description="projects/{p}/locations/{l}/models/{model}")
    model_version_id: str | None = None
    model_display_name: str


class VertexAttribution(GoogleJson):
    """Vertex's `Attribution`, then the gateway's own keys (proto parsers drop those)."""

    baseline_output_value: float
    instance_output_value: float
    feature_attributions: dict[str, Any]
    output_index: list[int]
    output_display_name: str
    approximation_error: float | None = None
    output_name: str
    method: str = Field(alias="method")
    probability: float = Field(alias="probability")
    synset: str = Field(alias="synset")
    explained_model: str = Field(alias="explained_model")
    faithfulness: Faithfulness | None = Field(None, alias="faithfulness")
    sag: StructuredAttentionGraph | None = Field(None, alias="sag")
    visualization: VisualizationConfig = Field(alias="visualization")

    @classmethod
    def of(cls, entry: LabelAttribution) -> VertexAttribution:
        """The mapping in the module docstring."""
        features: dict[str, Any] = {}
        for name, image in entry.attributions.items():
            feature = image.model_dump(exclude_none=True)
            if entry.glimpses is not None:
                feature["glimpses"] = [g.model_dump() for g in entry.glimpses]
            if entry.attribution_map is not None:
                feature["attribution_map"] = entry.attribution_map.model_dump()
            features[name] = feature
        return cls(
            baseline_output_value=entry.baseline_score,
            instance_output_value=entry.example_score,
            feature_attributions=features,
            output_index=[entry.label_index],
            output_display_name=entry.label_name,
            approximation_error=entry.approx_error,
            output_name=entry.output_name,
            method=entry.method,
            probability=entry.probability,
            synset=entry.synset,
            explained_model=entry.explained_model,
            faithfulness=entry.faithfulness,
            sag=entry.sag,
            visualization=entry.visualization,
        )


class VertexExplanation(GoogleJson):
    """Vertex's `Explanation` (one per instance), then the gateway's own keys."""

    attributions: list[VertexAttribution]
    key: str | int | float | None = Field(None, alias="key")  # the instance's, as given
    model_evaluations: int = Field(alias="model_evaluations")
    timing_ms: dict[str, float] = Field(alias="timing_ms")

    @classmethod
    def of(cls, explanation: Explanation) -> VertexExplanation:
        return cls(
            attributions=[VertexAttribution.of(e) for e in explanation.attributions_by_label],
            key=explanation.key,
            model_evaluations=explanation.model_evaluations,
            timing_ms=explanation.timing_ms,
        )


class VertexExplainResponse(GoogleJson):
    explanations: list[VertexExplanation]
    deployed_model_id: str
    predictions: list[Prediction] = Field(
        description="The gateway's :predict object for each instance (no annotated image)."
    )


class VertexDeployedModel(GoogleJson):
    id: str
    model: str
    model_version_id: str | None = None
    display_name: str
    create_time: str


class VertexEndpoint(GoogleJson):
    """The Endpoint resource the SDK reads before it predicts: one deployed model, all the
    traffic."""

    name: str
    display_name: str
    description: str
    deployed_models: list[VertexDeployedModel]
    traffic_split: dict[str, int]
    create_time: str
    update_time: str


class VertexModelEvaluation(GoogleJson):
    """Vertex's ModelEvaluation: a version's evaluation on its test split, as `glimpse train`
    wrote it (metrics in the classification metrics schema; glimpse's own in `metadata`)."""

    model_config = ConfigDict(extra="allow")  # the stored body's other keys, as written

    name: str  # projects/{p}/locations/{l}/models/{m}/evaluations/{version}
    display_name: str | None = None
    metrics_schema_uri: str | None = None
    metrics: dict[str, Any] | None = None
    create_time: str | None = None
    metadata: dict[str, Any] | None = None


class VertexModelEvaluationList(GoogleJson):
    """Vertex's ListModelEvaluationsResponse (`{}` when there are none, as Google answers)."""

    model_evaluations: list[VertexModelEvaluation] | None = None
    next_page_token: str | None = None


class RawPredictRequest(RootModel[PredictRequest]):
    """`:rawPredict`'s body: the model container's own (a :predict body), or that body inside
    `google.api.HttpBody` as Google's clients send it (`PredictionServiceClient.raw_predict`
    over REST: `{"httpBody": {"contentType": "application/json", "data": "<base64>"}}`),
    which is then answered in the same envelope, the shape the client parses back."""

    _enveloped: bool = PrivateAttr(False)

    @model_validator(mode="wrap")
    @classmethod
    def _unwrap(cls, data: Any, handler: Any) -> RawPredictRequest:
        enveloped = isinstance(data, dict) and "httpBody" in data
        if enveloped:
            data = _http_body_json(data)
        request = handler(data)
        request._enveloped = enveloped
        return request

    @property
    def enveloped(self) -> bool:
        return self._enveloped


def _http_body_json(data: dict[str, Any]) -> Any:
    """The JSON inside an HttpBody envelope; what is wrong with the envelope, named."""
    if set(data) != {"httpBody"} or not isinstance(data["httpBody"], dict):
        raise ValueError('httpBody: the body is either the model\'s JSON or {"httpBody": {...}}')
    body = data["httpBody"]
    unknown = set(body) - {"contentType", "data", "extensions"}
    if unknown:
        raise ValueError(f"httpBody: unknown fields {sorted(unknown)[:5]}")
    content_type = body.get("contentType") or "application/json"
    if not isinstance(content_type, str) or content_type.split(";")[0].strip() != (
        "application/json"
    ):
        shown = content_type[:100] if isinstance(content_type, str) else type(content_type).__name__
        raise ValueError(f"httpBody.contentType: {shown!r}; this model takes application/json")
    text = body.get("data", "")
    if not isinstance(text, str):
        raise ValueError("httpBody.data must be a base64 string")
    try:  # protobuf's JSON writes the standard alphabet; the URL-safe one is read too
        raw = b64decode(text)
    except ValueError:
        raise ValueError("httpBody.data: invalid base64") from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"httpBody.data: JSON Parse error: {e}") from None
