"""The picture flow of /visualize: pick the model rows (the original, then each variant), run the image, draw the PNG."""

from __future__ import annotations

from contract import pictures as viz
from service.core.deadlines import Deadline, Disconnected
from service.core.decoding import Decoder, ImageInput
from service.core.errors import InvalidInput
from service.core.features import PICTURE_OUTPUTS, FeatureOptions
from service.core.pipeline import Pipeline
from service.core.registry import ModelRegistry, ModelVersion


class Pictures:
    def __init__(self, registry: ModelRegistry, pipeline: Pipeline, decoder: Decoder):
        self._registry = registry
        self._pipeline = pipeline
        self._decoder = decoder

    async def render(self, image: ImageInput, entry: ModelVersion, options: FeatureOptions, compare: bool,
                     deadline: Deadline, disconnected: Disconnected | None = None) -> bytes:
        """PNG bytes: one row per model (``entry``, or with ``compare`` its original and every variant of it)."""
        missing = [n for n in PICTURE_OUTPUTS if n not in entry.output_names]
        if missing:
            raise InvalidInput(f"model {entry.key} lacks outputs {missing} needed for the picture")
        models = self._rows_for(entry) if compare else [entry]
        ran = await self._pipeline.run(models, [image], options, deadline, disconnected)
        (array,) = ran.arrays
        rows = []
        for model, (result,) in zip(models, ran.results):
            o = result.outputs
            manifest = model.manifest
            label = viz.row_label(manifest.variant.kind, model.key, model.provider)
            # Numbers from the generated demo weights must never pass for a real model's: the picture says so.
            rows.append(viz.Row(label, array, o["patch_tokens"], o["token_norms"], o["defect_mask"],
                                synthetic=manifest.synthetic, threshold_std=manifest.defect.threshold_std))
        return await self._decoder.offload(viz.render, rows)

    def _rows_for(self, entry: ModelVersion) -> list[ModelVersion]:
        """Every ready, drawable model of ``entry``'s family (original, SINDER, test-time registers, ...)."""
        return [m for m in self._registry.family(entry)  # entry is in it: render checked its outputs
                if all(n in m.output_names for n in PICTURE_OUTPUTS) and m.patch_size == entry.patch_size]
