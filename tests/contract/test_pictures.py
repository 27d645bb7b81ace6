"""The defect picture (/visualize, sinder analyze), drawn alone: each row on its own colour scale, defect outlines, the
synthetic note; and it is a picture a person can read (fonts of a readable size)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from contract import pictures as viz

BRIGHT = viz.heat_colors(np.array([1.0]), 0.0, 1.0)[0]  # the top of the colour scale


def _row(norms: np.ndarray, mask: np.ndarray | None = None, synthetic: bool = False) -> viz.Row:
    h, w = norms.shape
    image = np.full((h * 14, w * 14, 3), 128, np.uint8)  # grey: no pixel of it looks like an outline or a note
    tokens = np.random.default_rng(0).normal(size=(h, w, 8)).astype(np.float32)
    return viz.Row(viz.row_label("original", "m:1", "CPUExecutionProvider"), image, tokens, norms,
                   np.zeros((h, w), bool) if mask is None else mask, synthetic)


def _draw(rows) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(viz.render(rows))).convert("RGB"))


def _bright_pixels(picture: np.ndarray) -> int:
    return int((np.abs(picture.astype(int) - BRIGHT.astype(int)).sum(-1) < 30).sum())


def test_heat_colours_span_the_given_scale():
    ends = viz.heat_colors(np.array([2.0, 3.0]), 2.0, 3.0)
    assert ends[0].sum() < 20 and ends[1].sum() > 600
    assert (viz.heat_colors(np.full(3, 5.0), 5.0, 5.0) == viz.heat_colors(np.array([0.0]), 0, 1)[0]).all()


def test_each_row_has_its_own_scale_so_a_clean_row_is_not_dark():
    """A shared scale turned the repaired map black next to the original's huge defect norms."""
    spiky = np.ones((4, 6))
    spiky[1, 2] = 1000.0  # one defect token, 1000x the rest
    clean = np.random.default_rng(1).uniform(1.0, 1.5, (4, 6))
    clean[:, :2] = 2.0  # eight tokens at the clean row's own maximum
    one = _bright_pixels(_draw([_row(spiky)]))
    two = _bright_pixels(_draw([_row(spiky), _row(clean)]))
    cell = (viz._MIN_PANEL // 4) ** 2  # a token's area at the picture's scale
    assert two - one > 6 * cell  # bright on the clean row's own scale; black on a shared one


def test_defects_are_outlined_only_where_flagged():
    norms = np.ones((4, 6))
    mask = np.zeros((4, 6), bool)
    cyan = lambda p: int(((p[..., 0] < 30) & (p[..., 1] > 225) & (p[..., 2] > 225)).sum())  # noqa: E731
    assert cyan(_draw([_row(norms)])) == 0
    mask[2, 3] = True
    assert cyan(_draw([_row(norms, mask)])) > 0


def test_synthetic_weights_add_the_note_in_its_warning_colour():
    norms = np.random.default_rng(2).uniform(1, 2, (4, 6))
    plain, synthetic = _draw([_row(norms)]), _draw([_row(norms, synthetic=True)])
    warn = lambda p: int((np.abs(p.astype(int) - np.array(viz._WARN)).sum(-1) < 40).sum())  # noqa: E731
    assert warn(plain) == 0 and warn(synthetic) > 200
    assert synthetic.shape[0] > plain.shape[0]  # the note is a legend line of its own


def test_fonts_are_readable_sizes():
    title, small = viz._font(18), viz._font(14)
    for font, least in ((title, 12), (small, 10)):
        top, bottom = font.getbbox("H")[1::2]
        assert bottom - top >= least  # Pillow's old bitmap default was 8 px tall


@pytest.mark.parametrize(("kind", "provider", "label"), [
    ("original", "CPUExecutionProvider", "original (m:1, on CPU)"),
    ("sinder", "CUDAExecutionProvider", "SINDER repair (m:1, on CUDA)"),
    ("ttr", "TensorrtExecutionProvider", "test-time registers (m:1, on TensorRT)"),
    ("ttr", "ROCMExecutionProvider", "test-time registers (m:1, on ROCM)"),
    ("future_kind", None, "future_kind (m:1)"),
])
def test_row_labels_name_the_variant_then_model_and_provider_in_one_bracket(kind, provider, label):
    assert viz.row_label(kind, "m:1", provider) == label


def test_pca_colors_in_another_models_basis():
    from contract.pictures import pca_colors

    tokens = np.random.default_rng(3).normal(size=(4, 5, 8))
    np.testing.assert_array_equal(pca_colors(tokens, fit=tokens), pca_colors(tokens))
    # alone, a scaled copy looks the same (each picture is stretched on its own) ...
    np.testing.assert_array_equal(pca_colors(2 * tokens), pca_colors(tokens))
    # ... in the original's basis and stretch it does not: the change shows
    assert not np.array_equal(pca_colors(2 * tokens, fit=tokens), pca_colors(tokens))
