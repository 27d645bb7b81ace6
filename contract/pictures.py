"""The defect picture, for people: per model one row of three panels (the image as the model saw
it, its last-block token norms with the defect tokens outlined, a PCA colour map of its patch
tokens) and a legend that says how to read them. numpy + Pillow only.

One renderer for both sides, so the pictures look alike: the service's ``POST /visualize``
(service/core/pictures.py) and ``sinder analyze``'s per-image pictures (sinder/analyze.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from contract.defects import THRESHOLD_STD

# Anchors of matplotlib's "inferno": dark = low norm, bright = high norm.
_HEAT = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                  [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=np.float64)
DEFECT_RGB = (0, 255, 255)  # cyan: absent from inferno, so an outline never blends into the map
_MIN_PANEL = 224  # smallest panel side, in pixels
_GAP = 16
_BAR = 14  # colour bar width
_MARGIN = 12
_TEXT = (20, 20, 20)
_MUTED = (90, 90, 90)

NORM_CAPTION = "token norm, last block (own scale)"
PCA_CAPTION = "PCA of patch tokens"
LEGEND = (
    "Left: the image as the model saw it (resized to its input size).",
    "Middle: the norm of each patch token after the last block, on the row's own colour scale (the bar beside it "
    "gives the values), so a repaired model's map is not dark just because the original's defects are large.",
    "Cyan boxes, on the image too: the tokens the defect rule flags, |cos| to the defect direction > "
    "mean + {k} std of the image's tokens (the SINDER paper's mask).",
    "Right: the first three principal components of the row's patch tokens as red, green and blue (each stretched "
    "over its 1st-99th percentile). A colour means nothing by itself and is not comparable between rows; patches "
    "of similar colour have similar features.",
)
SYNTHETIC_LEGEND = ("SYNTHETIC demo weights: generated, not trained, so the PCA colours carry no meaning at all "
                    "and the norm maps show the defects planted in them.")
_WARN = (170, 30, 30)


# What each variant kind (the manifest's ``variant.kind``) is called on a picture; an unknown kind is shown as it is.
VARIANT_NAMES = {"original": "original", "sinder": "SINDER repair", "ttr": "test-time registers"}
# onnxruntime's provider names, as people call them; any other loses its "ExecutionProvider" suffix.
_PROVIDER_NAMES = {"CPUExecutionProvider": "CPU", "CUDAExecutionProvider": "CUDA",
                   "TensorrtExecutionProvider": "TensorRT"}


def row_label(kind: str, model: str, provider: str | None = None) -> str:
    """A row's title, one bracket: what the model is, then which model and where it ran.
    ``row_label("sinder", "dinov2_demo_sinder:1", "CPUExecutionProvider")`` is
    "SINDER repair (dinov2_demo_sinder:1, on CPU)"."""
    where = [model]
    if provider:
        where.append("on " + _PROVIDER_NAMES.get(provider, provider.removesuffix("ExecutionProvider") or provider))
    return f"{VARIANT_NAMES.get(kind, kind)} ({', '.join(where)})"


@dataclass
class Row:
    label: str
    image: np.ndarray  # model input, [H, W, 3] uint8
    patch_tokens: np.ndarray  # [h, w, C]
    token_norms: np.ndarray  # [h, w]
    defect_mask: np.ndarray  # [h, w] bool
    synthetic: bool = False  # generated weights: the title and the legend say so
    threshold_std: float = THRESHOLD_STD  # k of the model's defect rule (its manifest's defect.threshold_std)


def heat_colors(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """``values`` mapped onto the inferno anchors between ``vmin`` and ``vmax`` (uint8 RGB)."""
    span = vmax - vmin
    unit = (values - vmin) / span if span > 0 else np.zeros_like(values, dtype=np.float64)
    scaled = np.clip(np.nan_to_num(unit), 0, 1) * (len(_HEAT) - 1)
    low = np.floor(scaled).astype(int).clip(0, len(_HEAT) - 2)
    frac = (scaled - low)[..., None]
    return (_HEAT[low] * (1 - frac) + _HEAT[low + 1] * frac).round().astype(np.uint8)


def pca_colors(tokens: np.ndarray, fit: np.ndarray | None = None) -> np.ndarray:
    """First three principal components of the tokens as RGB, each stretched over its 1-99 percentile.
    ``fit``: other tokens (another model's, same width) whose components and stretch are used instead,
    so that several models' features are drawn in one basis and their colours compare."""
    h, w, c = tokens.shape
    flat = tokens.reshape(-1, c).astype(np.float64)
    base = flat if fit is None else fit.reshape(-1, c).astype(np.float64)
    mean = base.mean(axis=0)
    base = base - mean
    if base.shape[0] < 2 or not (np.isfinite(base).all() and np.isfinite(flat).all()):
        return np.zeros((h, w, 3), np.uint8)
    _, _, vt = np.linalg.svd(base, full_matrices=False)
    comps, base_comps = (flat - mean) @ vt[:3].T, base @ vt[:3].T
    if comps.shape[1] < 3:
        comps = np.pad(comps, ((0, 0), (0, 3 - comps.shape[1])))
        base_comps = np.pad(base_comps, ((0, 0), (0, 3 - base_comps.shape[1])))
    lo, hi = np.percentile(base_comps, 1, axis=0), np.percentile(base_comps, 99, axis=0)
    rgb = np.clip((comps - lo) / np.where(hi - lo > 1e-12, hi - lo, 1.0), 0, 1)
    return (rgb.reshape(h, w, 3) * 255).round().astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, OSError):
        return ImageFont.load_default()


def _wrap(text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + ([line] if line else [])


def _line_height(font) -> int:
    top, bottom = font.getbbox("Hg")[1::2]
    return int((bottom - top) * 1.45) + 1


def _upsample(grid: np.ndarray, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(grid, "RGB").resize((size[1], size[0]), Image.Resampling.NEAREST)


def _outline_defects(panel: Image.Image, mask: np.ndarray) -> None:
    draw = ImageDraw.Draw(panel)
    ph, pw = panel.height / mask.shape[0], panel.width / mask.shape[1]
    for y, x in zip(*np.nonzero(mask)):
        draw.rectangle([x * pw, y * ph, (x + 1) * pw - 1, (y + 1) * ph - 1], outline=DEFECT_RGB, width=2)


def _colour_bar(draw: ImageDraw.ImageDraw, x: int, y: int, height: int, vmin: float, vmax: float, font) -> int:
    """A vertical bar at (x, y) with its min, middle and max values; returns its width with the labels."""
    ramp = heat_colors(np.linspace(vmax, vmin, height)[:, None], vmin, vmax)  # top = high
    for i in range(height):
        draw.line([(x, y + i), (x + _BAR - 1, y + i)], fill=tuple(int(v) for v in ramp[i, 0]))
    draw.rectangle([x, y, x + _BAR - 1, y + height - 1], outline=_MUTED)
    widest = 0
    for value, ty in ((vmax, y), ((vmin + vmax) / 2, y + height // 2), (vmin, y + height - 1)):
        text = f"{value:.3g}"
        box = font.getbbox(text)
        draw.text((x + _BAR + 4, ty - (box[1] + box[3]) // 2), text, fill=_TEXT, font=font)
        widest = max(widest, int(font.getlength(text)))
    return _BAR + 4 + widest


def _layout(rows: list[Row]) -> tuple[list[tuple[int, int]], int, int]:
    # Small model inputs are scaled up (whole factors, nearest) so that tokens stay visible.
    scale = max(1, -(-_MIN_PANEL // min(min(r.image.shape[:2]) for r in rows)))
    sizes = [(r.image.shape[0] * scale, r.image.shape[1] * scale) for r in rows]
    bar_width = _BAR + 4 + 64  # bar and its labels
    width = max(3 * w for _, w in sizes) + 2 * _GAP + bar_width + 2 * _MARGIN
    return sizes, bar_width, width


def _draw_row(canvas: Image.Image, row: Row, size: tuple[int, int], y: int, fonts: dict) -> int:
    """Draws one row at height ``y``; returns the height it took."""
    draw = ImageDraw.Draw(canvas)
    title, small = fonts["title"], fonts["small"]
    draw.text((_MARGIN, y), row.label, fill=_TEXT, font=title)
    if row.synthetic:
        draw.text((_MARGIN + title.getlength(row.label + "  "), y), "SYNTHETIC demo weights", fill=_WARN, font=title)
    y += _line_height(title)
    norms = np.asarray(row.token_norms, dtype=np.float64)
    finite = norms[np.isfinite(norms)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    defects = int(np.count_nonzero(row.defect_mask))
    image = Image.fromarray(row.image, "RGB").resize((size[1], size[0]), Image.Resampling.NEAREST)
    heat = _upsample(heat_colors(norms, vmin, vmax), size)
    for panel in (image, heat):
        _outline_defects(panel, row.defect_mask)
    grid = f"{row.defect_mask.shape[0]}x{row.defect_mask.shape[1]} tokens"
    captions = [f"image ({row.image.shape[0]}x{row.image.shape[1]} px)", NORM_CAPTION, PCA_CAPTION]
    notes = [f"{grid}; cyan: defect tokens", f"{defects} defect token{'s' * (defects != 1)} outlined in cyan",
             "colours: components 1-3 as R, G, B"]
    panels = [image, heat, _upsample(pca_colors(row.patch_tokens), size)]
    x = _MARGIN
    caption_h = _line_height(small)
    for i, (panel, caption, note) in enumerate(zip(panels, captions, notes)):
        draw.text((x, y), caption, fill=_TEXT, font=small)
        canvas.paste(panel, (x, y + caption_h))
        draw.text((x, y + caption_h + panel.height + 3), note, fill=_MUTED, font=small)
        x += panel.width + _GAP
        if i == 1:  # the norm map's own colour bar, right of it
            x += _colour_bar(draw, x - _GAP + 6, y + caption_h, panel.height, vmin, vmax, small) + 4
    return _line_height(title) + caption_h + size[0] + 3 + caption_h + _GAP


def _legend(rows: list[Row], font, width: int) -> list[tuple[str, tuple[int, int, int]]]:
    """The legend's lines, wrapped to ``width``, each with its colour."""
    lines = []
    ks = sorted({r.threshold_std for r in rows})
    k = f"{ks[0]:g}" if len(ks) == 1 else "k (" + ", ".join(f"{v:g}" for v in ks) + " by row)"
    paragraphs = [(text.replace("{k}", k), _MUTED) for text in LEGEND]
    if any(r.synthetic for r in rows):
        paragraphs.append((SYNTHETIC_LEGEND, _WARN))
    for text, colour in paragraphs:
        lines += [(line, colour) for line in _wrap(text, font, width)]
    return lines


def render(rows: list[Row], title: str | None = None) -> bytes:
    """The PNG of ``rows`` (top to bottom), under an optional ``title`` (e.g. the image's name)."""
    fonts = {"title": _font(18), "small": _font(14), "head": _font(20)}
    sizes, _, width = _layout(rows)
    legend = _legend(rows, fonts["small"], width - 2 * _MARGIN)
    line = _line_height(fonts["small"])
    head = _line_height(fonts["head"]) + _GAP // 2 if title else 0
    row_heights = [_line_height(fonts["title"]) + 2 * line + h + 3 + _GAP for h, _ in sizes]
    height = _MARGIN + head + sum(row_heights) + len(legend) * line + _MARGIN
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    y = _MARGIN
    if title:
        ImageDraw.Draw(canvas).text((_MARGIN, y), title, fill=_TEXT, font=fonts["head"])
        y += head
    for row, size in zip(rows, sizes):
        y += _draw_row(canvas, row, size, y, fonts)
    draw = ImageDraw.Draw(canvas)
    for text, colour in legend:
        draw.text((_MARGIN, y), text, fill=colour, font=fonts["small"])
        y += line
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()
