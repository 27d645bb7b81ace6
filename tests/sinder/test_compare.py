"""The comparison of a model's variants on held-out images (real measurements on a tiny model)."""

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sinder.compare import compare_variants, write_comparison
from sinder.model import LoadedModel
from sinder.registers.report import registers_model

sys.path.insert(0, str(Path(__file__).resolve().parent / "export"))
from export_helpers import tiny_loaded  # noqa: E402


@pytest.fixture
def held_out(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(2):
        path = tmp_path / f"h{i}.png"
        Image.fromarray((rng.random((70, 84, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def test_every_variant_is_measured_at_three_layers(tmp_path, held_out):
    original = tiny_loaded()
    changed = copy.deepcopy(original.model)
    with torch.no_grad():
        changed.blocks[1].mlp.fc2.weight.mul_(0.5)
    sinder = LoadedModel(model=changed, arch=original.arch, source="x", source_format="official",
                         sha256="e" * 64, synthetic=True)
    ttr = registers_model(original, {0: [1, 2, 3]})
    variants = {
        "tiny": {"method": "original", "loaded": original, "cpu_seconds": 0.0},
        "tiny_sinder": {"method": "SINDER", "loaded": sinder, "cpu_seconds": 12.5},
        "tiny_ttr": {"method": "test-time registers", "loaded": ttr, "cpu_seconds": 1.5, "neurons_edited": 3},
    }
    report = compare_variants(original, variants, held_out, 56, loss_layers={"0": 3, "1": 7})
    assert report["layers"]["last"] == 1 and report["layers"]["loss"] == 1
    assert report["synthetic"] and report["held_out_images"] == ["h0.png", "h1.png"]
    rows = report["variants"]
    assert rows["tiny"]["fidelity"] is None
    assert rows["tiny_ttr"]["neurons_edited"] == 3 and rows["tiny_sinder"]["cpu_seconds"] == 12.5
    for name in rows:
        for key in ("last", "loss", "peak_norm"):
            at = rows[name]["layers"][key]
            assert 0 <= at["defect_fraction"] <= 1
            assert ("verdict" in at) == (name != "tiny")  # the original is the reference
    assert rows["tiny_sinder"]["fidelity"]["cls_cosine"] < 1.0 - 1e-6  # the halved FFN moved the CLS token
    written = write_comparison(report, held_out, tmp_path / "out", 56)
    assert (tmp_path / "out" / "comparison.png").stat().st_size > 1000
    assert "_last_tokens" not in written and (tmp_path / "out" / "comparison.json").is_file()
