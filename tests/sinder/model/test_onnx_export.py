"""The model exports to ONNX with dynamic batch, height and width, and onnxruntime agrees with eager.

The recipe (the export helper relies on it), checked with torch 2.13: ``torch.onnx.export(model,
(example,), path, dynamo=True, opset_version=18, input_names=["images"], dynamic_shapes={"images":
{0: Dim("batch"), 2: 14 * Dim("h"), 3: 14 * Dim("w")}})``. It works because the position-embedding
interpolation is plain tensor arithmetic on the grid size (sinder/model/pos_embed.py); an eager
``F.interpolate(scale_factor=...)`` would be frozen at the example's size.
"""

import numpy as np
import onnxruntime as ort
import torch
from dinov2_test_weights import randomize_
from torch.export import Dim

from sinder.model import PATCH_SIZE, build_model, get_arch

EXAMPLE = (2, 3, 224, 308)
OTHER_SIZES = [(3, 3, 182, 420), (1, 3, 518, 518), (1, 3, 70, 42)]
MODES = ("official", "hf", "antialias")
OUTPUTS = ("cls", "patch", "prenorm")


class Features(torch.nn.Module):
    """The same weights under each interpolation mode, in one graph: one export instead of three."""

    def __init__(self, models):
        super().__init__()
        self.models = torch.nn.ModuleList(models)

    def forward(self, images):
        outs = []
        for model in self.models:
            out = model(images)
            outs += [out["x_norm_clstoken"], out["x_norm_patchtokens"], out["x_prenorm"]]
        return tuple(outs)


def test_onnx_export_dynamic_shapes_match_eager(tmp_path):
    base = get_arch("vits14").with_(name="tiny", embed_dim=64, depth=1, num_heads=1)
    weights = randomize_(build_model(base), seed=0).state_dict()
    models = []
    for mode in MODES:
        models.append(build_model(base.with_(interpolation=mode)))
        models[-1].load_state_dict(weights)
    model = Features(models).eval()
    path = tmp_path / "model.onnx"
    dims = {0: Dim("batch", min=1, max=64), 2: PATCH_SIZE * Dim("h", min=1, max=100),
            3: PATCH_SIZE * Dim("w", min=1, max=100)}
    torch.onnx.export(model, (torch.randn(*EXAMPLE),), str(path), dynamo=True, opset_version=18,
                      input_names=["images"], dynamic_shapes={"images": dims}, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch, channels, height, width = session.get_inputs()[0].shape
    assert channels == 3 and all(isinstance(d, str) for d in (batch, height, width)), (batch, height, width)
    for shape in OTHER_SIZES:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.no_grad():
            ref = model(x)
        got = session.run(None, {"images": x.numpy()})
        for i, (r, g) in enumerate(zip(ref, got)):
            mode, name = MODES[i // len(OUTPUTS)], OUTPUTS[i % len(OUTPUTS)]
            assert g.shape == tuple(r.shape), (mode, name, shape)
            # normed outputs are O(1); the pre-norm tokens grow with depth, so scale the bound
            bound = 1e-4 * max(1.0, float(r.abs().max())) if name == "prenorm" else 1e-4
            assert np.abs(g - r.numpy()).max() < bound, (mode, name, shape)
        if shape[2:] != (518, 518):  # off the native grid the modes must really differ
            assert np.abs(got[1] - got[4]).max() > 1e-3
