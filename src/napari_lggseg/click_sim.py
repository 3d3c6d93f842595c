"""The standard simulated-click protocol, used to train and to benchmark click correction.

The next click goes to the voxel farthest (Euclidean distance, in voxels) from the boundary of the
largest connected error region: positive in a missed region (tumour the mask lacks), negative in a
false one (mask where there is no tumour). Missed and false voxels are labelled separately, so a
region never mixes the two. Works on 3-D volumes (the benchmark) and 2-D slices (training).
No Qt, no torch.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def largest_error_region(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """(mask of the largest connected error region, True when it is missed tumour); None when the
    prediction is exact."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    best, best_size, best_positive = None, 0, True
    for positive, err in ((True, truth & ~pred), (False, pred & ~truth)):
        if not err.any():
            continue
        labels, n = ndimage.label(err)
        sizes = np.bincount(labels.ravel())[1:]
        k = int(np.argmax(sizes))
        if sizes[k] > best_size:
            best, best_size, best_positive = labels == k + 1, int(sizes[k]), positive
    return None if best is None else (best, best_positive)


def farthest_from_boundary(region: np.ndarray) -> tuple[int, ...]:
    """The voxel of ``region`` farthest from its boundary (the array's edge counts as boundary);
    the first one in C order on a tie."""
    box = ndimage.find_objects(region.astype(np.uint8))[0]
    inner = np.pad(region[box], 1)
    dist = ndimage.distance_transform_edt(inner)
    local = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return tuple(int(i - 1 + s.start) for i, s in zip(local, box))


def next_click(pred: np.ndarray, truth: np.ndarray) -> tuple[tuple[int, ...], bool] | None:
    """(voxel index, positive) of the protocol's next click; None when nothing is wrong."""
    found = largest_error_region(pred, truth)
    if found is None:
        return None
    region, positive = found
    return farthest_from_boundary(region), positive


def clicks_to_reach(dices: list[float], target: float) -> int:
    """NoC@target: the number of clicks after which Dice first reaches ``target``; the largest
    click count when it never does (``dices[k]`` is the Dice after ``k`` clicks)."""
    for k, d in enumerate(dices):
        if d >= target:
            return k
    return len(dices) - 1
