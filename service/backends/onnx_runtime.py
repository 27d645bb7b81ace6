"""onnxruntime backend: one InferenceSession per model, CUDA first when asked, I/O binding on the GPU."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.backends.base import GPU_PROVIDERS, Backend, TensorSpec

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(uint8)": "uint8",
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(bool)": "bool",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}


def _preload_cuda_libraries() -> None:
    # CUDA and cuDNN installed as pip wheels (nvidia-*) are not on the loader's path; onnxruntime
    # finds them only when preloaded, and otherwise falls back to CPU without an error.
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # a system-wide CUDA install may still work: let the session decide
        log.warning("onnxruntime.preload_dlls() failed: %s", exc)


def resolve_providers(requested: list[str], device_id: int = 0) -> list:
    """Expand ``auto`` and attach device options; keep only providers this onnxruntime build has."""
    available = ort.get_available_providers()
    names: list[str] = []
    for name in requested:
        if name == "auto":
            names += [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        else:
            names.append(name)
    unknown = [n for n in names if n not in available]
    if unknown:
        log.warning("execution providers %s are not in this onnxruntime build (has %s); skipping them", unknown, available)
    names = [n for n in dict.fromkeys(names) if n in available]
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    if any(n in GPU_PROVIDERS for n in names):
        _preload_cuda_libraries()
    out = []
    for name in names:
        if name in GPU_PROVIDERS:
            out.append((name, {"device_id": device_id}))
        else:
            out.append(name)
    return out


class OnnxRuntimeBackend(Backend):
    def __init__(self, model_path: str | Path, providers: list[str] | None = None, *, device_id: int = 0, intra_op_threads: int = 0):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        self._session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=resolve_providers(providers or ["auto"], device_id)
        )
        self._device_id = device_id
        # onnxruntime-gpu silently falls back to CPU when CUDA/cuDNN is missing: ask the session.
        self._provider = self._session.get_providers()[0]
        self._inputs = [self._spec(i) for i in self._session.get_inputs()]
        self._outputs = [self._spec(o) for o in self._session.get_outputs()]
        self._input_name = self._inputs[0].name
        self._use_binding = self._provider in GPU_PROVIDERS

    @staticmethod
    def _spec(node) -> TensorSpec:
        return TensorSpec(node.name, _ORT_TYPES.get(node.type, node.type), tuple(d if isinstance(d, int) else None for d in node.shape))

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs

    @property
    def provider(self) -> str:
        return self._provider

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = np.ascontiguousarray(images)
        if not self._use_binding:
            values = self._session.run(None, {self._input_name: images})
            return dict(zip(self.output_names, values))
        # GPU: copy the uint8 batch once to the device, let outputs live there, then fetch them.
        binding = self._session.io_binding()
        device_input = ort.OrtValue.ortvalue_from_numpy(images, "cuda", self._device_id)
        binding.bind_ortvalue_input(self._input_name, device_input)
        for name in self.output_names:
            binding.bind_output(name, "cuda", self._device_id)
        self._session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu()))

    def close(self) -> None:
        self._session = None
