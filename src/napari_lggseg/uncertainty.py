"""Which slices should a person check first? A per-slice score of how unsure the model is. No Qt.

The score is the expected number of wrongly labelled voxels on a slice if the probabilities were
calibrated: ``sum(min(p, 1 - p))``. It is large where the tumour border is fuzzy or
the model half-believes in a region, which is where corrections pay off. Its rank correlation
with the real per-slice error is measured in training/REPORT.md, not assumed.
"""

from __future__ import annotations

import numpy as np


def slice_uncertainty(prob: np.ndarray) -> np.ndarray:
    """(Z, H, W) probabilities -> (Z,) expected error voxels per slice."""
    p = np.asarray(prob, np.float32)
    return np.minimum(p, 1.0 - p).sum(axis=(1, 2))


def slices_to_review(
    prob: np.ndarray, n: int = 8, min_score: float = 5.0
) -> list[tuple[int, float]]:
    """The ``n`` most uncertain slices as (0-based index, score), most uncertain first; slices
    scoring below ``min_score`` expected error voxels are left out."""
    score = slice_uncertainty(prob)
    order = np.argsort(-score, kind="stable")
    return [(int(i), float(score[i])) for i in order[:n] if score[i] >= min_score]
