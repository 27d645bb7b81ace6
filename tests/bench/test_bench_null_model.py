"""bench/null_model.py: the repository's I/O contract at near-zero cost; bench/rawload.py's request bytes."""

from __future__ import annotations

import numpy as np

from bench import rawload
from bench.null_model import write_null_model


def test_null_model_has_the_contract_outputs_and_loads_in_the_service(tmp_path):
    import onnxruntime as ort

    from service.core.registry import discover

    folder = write_null_model(tmp_path, "null_vits14", "vits14", "fp16", max_batch_size=8)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": np.zeros((3, 224, 308, 3), np.uint8)})))
    assert out["patch_tokens"].shape == (3, 16, 22, 384) and out["patch_tokens"].dtype == np.float16
    assert out["cls_token"].shape == (3, 384) and out["defect_mask"].dtype == np.bool_
    assert out["token_norms"].shape == out["defect_alignment"].shape == (3, 16, 22)
    assert np.std(out["patch_tokens"][0].astype(np.float32)) > 0.5  # random values, not zeros: encoders see real work
    (entry,) = discover(tmp_path)
    assert entry.name == "null_vits14" and entry.version == 1


def test_raw_request_bytes():
    request = rawload.build_request("http://127.0.0.1:8000/v2/models/m/infer", b"xyz", {"Content-Type": "a/b"})
    head, body = request.split(b"\r\n\r\n")
    assert head.startswith(b"POST /v2/models/m/infer HTTP/1.1\r\n") and b"Content-Length: 3" in head and body == b"xyz"
