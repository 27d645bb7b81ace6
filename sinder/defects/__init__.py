"""Singular defects (Wang, Zhang, Salzmann, ECCV 2024): predicted directions from the weights,
and what they look like on real tokens."""

from .directions import block_maps, defect_directions
from .measure import defect_mask, high_norm_mask, measure_layers

__all__ = ["block_maps", "defect_directions", "defect_mask", "high_norm_mask", "measure_layers"]
