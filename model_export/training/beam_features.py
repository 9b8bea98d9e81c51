"""View features as an Apache Beam pipeline: for import files too big for one machine.

The pipeline fills the feature cache (a `gs://` cache for Dataflow: workers share nothing
else); the trainer then finds every photo there and only fits the head and runs the steps that
depend on it. Photos a worker cannot read or decode are left out of the cache; the trainer
meets them again and lists them with their line, as without Beam.

`glimpse train ... --runner beam -- --runner=DataflowRunner --project=P --region=R
--temp_location=gs://b/tmp --cache-dir gs://b/cache` (DirectRunner when no options are given).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

from model_export.config import SaccaderConfig
from model_export.training.import_file import Example


def _read(uri: str) -> bytes | None:
    try:
        if uri.startswith("gs://"):
            from service.batch.storage import Storage

            with Storage().open_read(uri) as f:
                return f.read()
        return Path(uri).read_bytes()
    except Exception:  # noqa: BLE001  (the trainer reports it, with its line)
        return None


def _do_fn():
    import apache_beam as beam

    class ExtractViews(beam.DoFn):
        """Batches of URIs -> view features into the cache (one frozen backbone a worker)."""

        def __init__(self, cache_root: str, config: dict):
            self.cache_root = cache_root
            self.config = config

        def setup(self) -> None:
            from model_export.training.features import FeatureCache, FeatureExtractor
            from model_export.training.trainer import frozen_model

            cfg = SaccaderConfig(**self.config)
            self.extractor = FeatureExtractor(frozen_model(cfg, 1))
            self.cache = FeatureCache(self.cache_root, self.extractor.identity)

        def process(self, uris: Sequence[str]) -> Iterable[int]:
            from model_export.training.features import UnreadableImage

            images = [(uri, _read(uri)) for uri in uris]
            todo = []
            for _, data in images:
                if data is not None and self.cache.get(self.cache.key(data)) is None:
                    todo.append(data)
            if todo:
                for data, value in zip(todo, self.extractor.view(todo), strict=True):
                    if not isinstance(value, UnreadableImage):
                        self.cache.put(self.cache.key(data), value)
            yield len(todo)

    return ExtractViews


def extract_with_beam(
    examples: Sequence[Example], cache_root: Path | str, cfg: SaccaderConfig, args: list[str]
) -> None:
    try:
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        raise RuntimeError(
            "--runner beam needs Apache Beam: pip install 'glimpse[beam,train]'"
        ) from None
    options = PipelineOptions(args or ["--runner=DirectRunner"])
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | "URIs" >> beam.Create(sorted({e.uri for e in examples}))
            | "Spread" >> beam.Reshuffle()
            | "Batch" >> beam.BatchElements(min_batch_size=4, max_batch_size=16)
            | "Extract" >> beam.ParDo(_do_fn()(str(cache_root), dataclasses.asdict(cfg)))
        )
