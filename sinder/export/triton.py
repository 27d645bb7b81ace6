"""The Triton ``config.pbtxt`` of a model folder (protobuf text format, onnxruntime backend).

Dims exclude the batch dimension (``max_batch_size`` > 0 makes Triton add it) and use -1
for the image-dependent ones. See Triton's model configuration docs: ``platform``,
``max_batch_size``, ``input``/``output``, ``dynamic_batching``, ``instance_group``.
"""

from __future__ import annotations

TRITON_DTYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32", "float16": "TYPE_FP16", "bool": "TYPE_BOOL"}
INSTANCE_KINDS = ("KIND_GPU", "KIND_CPU")


def _tensor(name: str, dtype: str, dims: list[int]) -> str:
    return (
        "  {\n"
        f'    name: "{name}"\n'
        f"    data_type: {TRITON_DTYPES[dtype]}\n"
        f"    dims: [ {', '.join(str(d) for d in dims)} ]\n"
        "  }"
    )


def config_pbtxt(
    name: str,
    inputs: list[dict],
    outputs: list[dict],
    max_batch_size: int,
    instance_kind: str = "KIND_GPU",
    instance_count: int = 1,
    max_queue_delay_us: int = 5000,
    default_model_filename: str = "model.onnx",
) -> str:
    """``inputs``/``outputs`` are the manifest's entries: ``{"name", "dtype", "shape"}`` with the batch dim first."""
    if instance_kind not in INSTANCE_KINDS:
        raise ValueError(f"instance kind must be one of {INSTANCE_KINDS}, not {instance_kind!r}")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
    ins = ",\n".join(_tensor(t["name"], t["dtype"], list(t["shape"][1:])) for t in inputs)
    outs = ",\n".join(_tensor(t["name"], t["dtype"], list(t["shape"][1:])) for t in outputs)
    preferred = sorted({b for b in (4, 8, 16, 32, max_batch_size) if b <= max_batch_size})
    return (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f'default_model_filename: "{default_model_filename}"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{ins}\n]\n"
        f"output [\n{outs}\n]\n"
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]\n"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n"
        "}\n"
        "instance_group [\n"
        "  {\n"
        f"    count: {instance_count}\n"
        f"    kind: {instance_kind}\n"
        "  }\n"
        "]\n"
    )
