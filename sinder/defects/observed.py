"""The defect direction the tokens show, beside the one the weights predict, and which one to use.

The paper's prediction depends on how a checkpoint is parametrised, not only on what it
computes (see the README, "What the prediction is sensitive to"): a functionally identical
checkpoint can move it off the defect. So the direction is also *observed*: at each layer, the
leading direction of the high-norm patch tokens (the top right singular vector of their unit
vectors, pooled over the images; its share of their energy says how much they agree on one
direction). ``choose_directions`` then picks, per ``--direction``:

- ``predicted``: the paper's directions, whatever the tokens show;
- ``observed``: the observed direction at every layer that has coherent high-norm tokens, and
  the nearest such layer's elsewhere (``observed@k`` in the record); the prediction only when no
  layer has any;
- ``auto`` (the default): the prediction when it explains the high-norm tokens (agreement at
  least ``AGREEMENT_MIN`` at every layer with coherent high-norm tokens), the observed
  directions otherwise.

Every choice comes with a record of what was chosen and why, for reports and manifests, and a
warning whenever high-norm tokens exist that the prediction does not explain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..direction_modes import DIRECTION_MODES
from .directions import fix_sign

AGREEMENT_MIN = 0.9  # |cos| between predicted and observed at which the prediction explains the tokens
COHERENCE_MIN = 0.8  # mean cos^2 of the high-norm tokens with their leading direction: one shared direction
# (every token shares the mean token direction somewhat, so natural outliers of early layers reach about half)
MIN_TOKENS = 5  # fewer high-norm tokens than this do not define a direction (a handful always agree)


@dataclass
class LayerObservation:
    high_norm_tokens: int
    direction: torch.Tensor | None  # unit, sign fixed; None when too few tokens
    coherence: float | None


def observe_from_gram(grams: list[torch.Tensor], counts: list[int]) -> list[LayerObservation]:
    """Per layer, the leading direction of the high-norm tokens from the sum of their unit vectors'
    outer products (``grams[i]`` ``[C, C]``, ``counts[i]`` tokens)."""
    out = []
    for gram, n in zip(grams, counts):
        if n < MIN_TOKENS:
            out.append(LayerObservation(n, None, None))
            continue
        values, vectors = torch.linalg.eigh(gram.double())
        coherence = float(values[-1] / values.sum().clamp_min(1e-30))
        out.append(LayerObservation(n, fix_sign(vectors[:, -1]).float(), coherence))
    return out


def agreement(predicted: torch.Tensor, observed: torch.Tensor | None) -> float | None:
    if observed is None:
        return None
    return float((F.normalize(predicted.double(), dim=0) @ F.normalize(observed.double(), dim=0)).abs())


@dataclass
class DirectionChoice:
    requested: str
    used: str  # "predicted" | "observed"
    directions: torch.Tensor  # [depth, C], what every measurement and the repair use
    sources: list[str]  # per layer: "predicted" | "observed"
    agreement: list[float | None]
    coherence: list[float | None]
    unexplained_layers: list[int] = field(default_factory=list)
    checked: bool = True  # False when no images were there to observe anything
    warnings: list[str] = field(default_factory=list)

    @property
    def first_own_layer(self) -> int:
        """The first layer whose direction is its own (predicted, or observed there or carried forward
        from an earlier layer). Before it stands a direction borrowed from a later layer, where no
        defect was observed: the paper's relative mask flags the tail of any |cos| distribution, so
        a repair must not take its loss there."""
        for i, source in enumerate(self.sources):
            if not source.startswith("observed@") or int(source.split("@")[1]) <= i:
                return i
        return 0

    def record(self) -> dict:
        """What reports and manifests say about the choice (no vectors)."""
        return {
            "requested": self.requested,
            "used": self.used,
            "checked_on_images": self.checked,
            "sources": self.sources,
            "agreement_predicted_observed": self.agreement,
            "observed_coherence": self.coherence,
            "unexplained_layers": self.unexplained_layers,
            "rule": (f"the prediction explains a layer's high-norm tokens when |cos(predicted, observed)| >= "
                     f"{AGREEMENT_MIN:g}; observed = leading direction of the layer's high-norm tokens (at least "
                     f"{MIN_TOKENS}, coherence >= {COHERENCE_MIN:g}); auto uses the prediction only when it "
                     "explains every such layer"),
            "warnings": self.warnings,
        }


def choose_directions(predicted: torch.Tensor, observations: list[LayerObservation] | None,
                      mode: str = "auto") -> DirectionChoice:
    """The directions to use under ``mode`` (one of ``DIRECTION_MODES``); ``observations`` None when
    there were no images (then only ``predicted`` or an unchecked ``auto`` is possible)."""
    if mode not in DIRECTION_MODES:
        raise ValueError(f"direction mode must be one of {DIRECTION_MODES}, got {mode!r}")
    depth = predicted.shape[0]
    if observations is None:
        if mode == "observed":
            raise ValueError("the observed direction needs images")
        note = [] if mode == "predicted" else [
            "no images: the predicted direction was not checked against high-norm tokens"]
        return DirectionChoice(mode, "predicted", predicted.float(), ["predicted"] * depth, [None] * depth,
                               [None] * depth, checked=False, warnings=note)
    agree = [agreement(predicted[i], o.direction) for i, o in enumerate(observations)]
    coherent = [o.direction is not None and (o.coherence or 0) >= COHERENCE_MIN for o in observations]
    unexplained = [i for i in range(depth) if coherent[i] and agree[i] < AGREEMENT_MIN]
    used = mode if mode != "auto" else ("observed" if unexplained else "predicted")
    directions, sources = predicted.float().clone(), ["predicted"] * depth
    if used == "observed" and any(coherent):
        # Where a layer shows no coherent high-norm tokens, the nearest observed direction (carried
        # forward, or back before the first one) stands in: a prediction the tokens contradict
        # elsewhere would make the paper's relative mask flag tokens at layers without a defect.
        first = coherent.index(True)
        current, since = observations[first].direction, first
        for i in range(depth):
            if coherent[i]:
                current, since = observations[i].direction, i
            directions[i] = current
            sources[i] = "observed" if since == i else f"observed@{since}"
    warnings = []
    if unexplained:
        worst = min(agree[i] for i in unexplained)
        warnings.append(
            f"high-norm tokens at layers {unexplained} are not explained by the predicted defect direction "
            f"(agreement down to {worst:.3f} < {AGREEMENT_MIN:g}); "
            + ("using the observed direction there" if used == "observed" else
               "--direction predicted keeps it anyway: diagnostics and repair may miss the defect"))
    return DirectionChoice(mode, used, directions, sources, agree, [o.coherence for o in observations],
                           unexplained, warnings=warnings)
