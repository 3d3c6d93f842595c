"""Per-volume Dice, tumour volume and post-processing of predicted masks. No torch, no Qt."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

POSTPROCESS_CHOICES = ("none", "largest", "min-size")


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two masks (>0 is foreground); 1.0 when both are empty."""
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else 2.0 * int((p & t).sum()) / denom


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep only the largest 3-D connected component (26-connectivity)."""
    labels, n = ndimage.label(mask > 0, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return (mask > 0).astype(np.uint8)
    sizes = np.bincount(labels.ravel())[1:]
    return (labels == (np.argmax(sizes) + 1)).astype(np.uint8)


def drop_small_components(
    mask: np.ndarray,
    prob: np.ndarray | None = None,
    min_fraction: float = 0.1,
    min_peak: float = 0.0,
) -> np.ndarray:
    """Drop 3-D components smaller than ``min_fraction`` of the largest one, or whose peak
    probability is below ``min_peak``. Unlike largest-component, a second real lesion survives,
    and a large false positive cannot erase the tumour."""
    labels, n = ndimage.label(mask > 0, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return (mask > 0).astype(np.uint8)
    sizes = np.bincount(labels.ravel())[1:]
    keep = sizes >= min_fraction * sizes.max()
    if prob is not None and min_peak > 0:
        peaks = ndimage.maximum(prob, labels, index=np.arange(1, n + 1))
        keep &= np.asarray(peaks) >= min_peak
    lut = np.concatenate([[False], keep])
    return lut[labels].astype(np.uint8)


def postprocess(
    mask: np.ndarray, method: str = "min-size", prob: np.ndarray | None = None, **kwargs
) -> np.ndarray:
    """Apply a named post-processing (``none``, ``largest``, ``min-size``)."""
    if method == "none":
        return (mask > 0).astype(np.uint8)
    if method == "largest":
        return largest_component(mask)
    if method == "min-size":
        return drop_small_components(mask, prob, **kwargs)
    raise ValueError(f"unknown post-processing {method!r}: choose one of {POSTPROCESS_CHOICES}")


def tumour_volume(mask: np.ndarray, spacing: tuple[float, float, float] | None = None) -> dict:
    """Voxels, and millilitres when ``spacing`` (z, y, x in mm) is given."""
    voxels = int((np.asarray(mask) > 0).sum())
    out = {"voxels": voxels}
    if spacing is not None:
        out["ml"] = voxels * float(np.prod(spacing)) / 1000.0
    return out
