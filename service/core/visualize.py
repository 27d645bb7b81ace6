"""A PNG for people: the image, its token-norm heat map with defect tokens outlined, and a
PCA colour map of its patch tokens; one row per model (original above repaired). numpy + Pillow only."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Anchors of an inferno-like colour map: dark = low norm, bright = high norm.
_HEAT = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)
_DEFECT = (0, 255, 255)
_LINE = 14  # height of one text line
_MIN_PANEL = 224  # smallest panel side, in pixels
_GAP = 4


@dataclass
class Row:
    label: str
    image: np.ndarray  # model input, [H, W, 3] uint8
    patch_tokens: np.ndarray  # [h, w, C]
    token_norms: np.ndarray  # [h, w]
    defect_mask: np.ndarray  # [h, w] bool


def heat_colors(values: np.ndarray, vmax: float) -> np.ndarray:
    scaled = np.clip(np.nan_to_num(values / vmax if vmax > 0 else values * 0), 0, 1) * (len(_HEAT) - 1)
    low = np.floor(scaled).astype(int).clip(0, len(_HEAT) - 2)
    frac = (scaled - low)[..., None]
    return (_HEAT[low] * (1 - frac) + _HEAT[low + 1] * frac).round().astype(np.uint8)


def pca_colors(tokens: np.ndarray) -> np.ndarray:
    """First three principal components of the tokens as RGB, each stretched over its 1-99 percentile."""
    h, w, c = tokens.shape
    flat = tokens.reshape(-1, c).astype(np.float64)
    flat = flat - flat.mean(axis=0)
    if flat.shape[0] < 2 or not np.isfinite(flat).all():
        return np.zeros((h, w, 3), np.uint8)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    comps = flat @ vt[:3].T
    if comps.shape[1] < 3:
        comps = np.pad(comps, ((0, 0), (0, 3 - comps.shape[1])))
    lo, hi = np.percentile(comps, 1, axis=0), np.percentile(comps, 99, axis=0)
    rgb = np.clip((comps - lo) / np.where(hi - lo > 1e-12, hi - lo, 1.0), 0, 1)
    return (rgb.reshape(h, w, 3) * 255).round().astype(np.uint8)


def _upsample(grid: np.ndarray, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(grid, "RGB").resize((size[1], size[0]), Image.Resampling.NEAREST)


def _outline_defects(panel: Image.Image, mask: np.ndarray) -> None:
    draw = ImageDraw.Draw(panel)
    ph, pw = panel.height / mask.shape[0], panel.width / mask.shape[1]
    for y, x in zip(*np.nonzero(mask)):
        draw.rectangle([x * pw, y * ph, (x + 1) * pw - 1, (y + 1) * ph - 1], outline=_DEFECT, width=2)


def render(rows: list[Row]) -> bytes:
    vmax = max(float(np.nanmax(r.token_norms)) for r in rows)  # one scale, so rows compare
    font = ImageFont.load_default()
    # Small model inputs are scaled up (whole factors, nearest) so that tokens stay visible.
    scale = max(1, -(-_MIN_PANEL // min(min(r.image.shape[:2]) for r in rows)))
    sizes = [(r.image.shape[0] * scale, r.image.shape[1] * scale) for r in rows]
    width = max(3 * w + 2 * _GAP for _, w in sizes)
    height = sum(h + 2 * _LINE + _GAP for h, _ in sizes)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = 0
    for row, size in zip(rows, sizes):
        heat = _upsample(heat_colors(row.token_norms, vmax), size)
        _outline_defects(heat, row.defect_mask)
        image = Image.fromarray(row.image, "RGB").resize((size[1], size[0]), Image.Resampling.NEAREST)
        panels = [image, heat, _upsample(pca_colors(row.patch_tokens), size)]
        defects = int(np.count_nonzero(row.defect_mask))
        captions = ["image", f"norms (max {float(np.nanmax(row.token_norms)):.3g}), {defects} defect", "PCA of patch tokens"]
        draw.text((2, y + 2), row.label, fill=(0, 0, 0), font=font)
        x = 0
        for panel, caption in zip(panels, captions):
            draw.text((x + 2, y + _LINE + 2), caption, fill=(70, 70, 70), font=font)
            canvas.paste(panel, (x, y + 2 * _LINE))
            x += panel.width + _GAP
        y += size[0] + 2 * _LINE + _GAP
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()
