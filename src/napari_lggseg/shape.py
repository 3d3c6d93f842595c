"""Tumour shape features of a mask: volume and the three features of the LGG radiogenomics study.

The features are those of Mazurowski et al., "Radiogenomics of lower-grade glioma:
algorithmically-assessed tumor shape is associated with tumor genomic subtypes and patient
outcomes in a multi-institutional study with The Cancer Genome Atlas data", J Neurooncol 133
(2017) 27-35, and Czarnek et al., J Neurooncol 132 (2017) 55-62 (same group, same features,
GBM), used again on automatic masks by Buda, Saha, Mazurowski, "Association of genomic subtypes
of lower-grade gliomas with shape features automatically extracted by a deep learning
algorithm", Comput Biol Med 109 (2019) 218-225 (arXiv 1906.03720):

- **bounding ellipsoid volume ratio** (3-D): tumour volume / volume of the minimum bounding
  ellipsoid. 1 for an ellipsoid, smaller for irregular, lobulated tumours.
- **angular standard deviation** (2-D, on the slice with the largest tumour area): spread of
  the radial distance (centroid to margin) within angular sectors, averaged over the sectors,
  relative to the mean radius. 0 for a disc (and any star-convex outline whose radius does not
  change within a sector).
- **margin fluctuation** (2-D, same slice): how much the radial distance along the margin
  departs from its smoothed version, relative to the mean radius; high for a jagged margin.

The papers state these definitions in words; the details below are choices, each tested in
tests/test_shape.py:

- BEVR: the volume is voxel count x voxel volume; the ellipsoid is the minimum-volume
  ellipsoid enclosing the tumour's voxel centres in mm (Khachiyan's algorithm on the vertices
  of their convex hull, within 0.15% of the minimum volume). A digitised ball or ellipsoid,
  whose voxel centres lie inside it and whose voxel count is its volume, gets BEVR near 1
  (voxel corners instead would enclose half a voxel more all round: 0.92 for a ball of radius
  18 voxels). Because the enclosing ellipsoid is affine-equivariant, BEVR does not depend on
  the voxel spacing at all; small digitised objects can exceed 1 slightly. Not defined unless
  the tumour spans at least 2 voxels along every axis.
- 2-D slice: the largest connected component of the slice with the most tumour pixels, holes
  filled (the margin is the outer outline; scikit-image ``find_contours``), in mm; the centroid
  is the component's centroid. Not defined below 9 pixels.
- angular SD: ten equiangular sectors (36 degrees) about the centroid ("the average of the
  radial distance standard deviations from the centroid ... across ten equiangular bins in one
  slice", as a summary of Buda et al. 2019 words it; the papers' full text was not at hand); the
  outline is resampled every half pixel so each sector is sampled by
  arc length; sectors with fewer than 2 samples are skipped.
- margin fluctuation: the radial distance along the (resampled) outline minus its circular
  moving average over a window of 1/10 of the perimeter; standard deviation / mean radius.
- Both 2-D features are ratios to the mean radius: unchanged by an isotropic in-plane spacing
  and by the slice thickness.

Everything else (voxel count, extent, surface, sphericity, axis lengths, ...) comes
from scikit-image (``regionprops``, ``marching_cubes``) and scipy (``ConvexHull``). Anything
that is not defined for a mask (an empty mask, one voxel) is ``None``, never NaN. Qt-free, and
cheap: about 0.1 s for a typical LGG mask (``shape_features``; see the report for timings).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

THREE_FEATURES = ("bounding_ellipsoid_volume_ratio", "angular_sd", "margin_fluctuation")
SECTORS = 10
SMOOTHING_FRACTION = 0.1
MIN_SLICE_PIXELS = 9
# changes whenever a definition above changes: caches of feature values key on it
DEFINITIONS = f"bevr-centres asd{SECTORS} mf{SMOOTHING_FRACTION} min{MIN_SLICE_PIXELS}"


def _spacing3(spacing) -> tuple[float, float, float]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"voxel spacing must be three positive numbers (Z, Y, X), got {spacing}")
    return sp


def surface_points(mask: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """(N, 3) centres, in mm, of the tumour voxels that touch the background (6-connected):
    their convex hull is the hull of the whole tumour's voxel centres."""
    m = np.asarray(mask).astype(bool)
    inner = ndimage.binary_erosion(m, border_value=0)
    return np.argwhere(m & ~inner).astype(np.float64) * np.asarray(_spacing3(spacing))


def min_volume_ellipsoid(points: np.ndarray, tol: float = 1e-3, max_iter: int = 20000):
    """Minimum-volume ellipsoid enclosing ``points`` (N, d): ``(A, centre)`` with the ellipsoid
    ``(x - c)^T A (x - c) <= 1``. Khachiyan's algorithm with Todd & Yildirim's away steps, stopped
    when no point lies further out than ``(1 + tol) (d + 1)`` in the algorithm's metric; the
    result is then scaled to enclose every point, so its volume is at most ``(1 + tol)^(d/2)``
    above the minimum. Pass the convex hull's vertices to make it fast."""
    p = np.asarray(points, np.float64)
    n, d = p.shape
    q = np.vstack([p.T, np.ones(n)])  # (d+1, n)
    u = np.full(n, 1.0 / n)
    x_inv = np.linalg.inv((q * u) @ q.T)
    m = np.einsum("in,in->n", q, x_inv @ q)  # q_i^T X^-1 q_i for every point
    for _ in range(max_iter):
        j = int(np.argmax(m))
        if m[j] <= (1.0 + tol) * (d + 1.0):
            break
        k = int(np.argmin(np.where(u > 0, m, np.inf)))  # Todd-Yildirim away step: shed weight
        if d + 1.0 - m[k] > m[j] - d - 1.0:
            j = k
        step = (m[j] - d - 1.0) / ((d + 1.0) * (m[j] - 1.0))
        if step < 0:
            step = max(step, -u[j] / (1.0 - u[j]))
        # X <- (1 - step) X + step q_j q_j^T, with X^-1 and m updated in rank one (Sherman-Morrison)
        v = x_inv @ q[:, j]
        w = q.T @ v
        denom = (1.0 - step) + step * m[j]
        x_inv = (x_inv - step * np.outer(v, v) / denom) / (1.0 - step)
        m = (m - step * w**2 / denom) / (1.0 - step)
        u *= 1.0 - step
        u[j] += step
        u[j] = max(u[j], 0.0)
    centre = p.T @ u
    cov = (p.T * u) @ p - np.outer(centre, centre)
    a = np.linalg.inv(cov) / d
    diff = p - centre
    reach = float(np.max(np.einsum("ij,jk,ik->i", diff, a, diff)))
    return a / max(reach, 1e-300), centre


def ellipsoid_volume(a: np.ndarray) -> float:
    d = a.shape[0]
    unit_ball = math.pi ** (d / 2) / math.gamma(d / 2 + 1)
    return float(unit_ball / math.sqrt(np.linalg.det(a)))


def _hull(points: np.ndarray):
    from scipy.spatial import ConvexHull

    return ConvexHull(points)


def bounding_ellipsoid_volume_ratio(mask: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> float | None:
    """Tumour volume / minimum bounding ellipsoid volume (Mazurowski 2017); see the module."""
    m = np.asarray(mask).astype(bool)
    if m.ndim != 3 or not m.any():
        return None
    extent = [
        np.flatnonzero(np.any(m, axis=tuple(i for i in range(3) if i != ax))) for ax in range(3)
    ]
    if any(e[-1] - e[0] < 1 for e in extent):
        return None
    sp = _spacing3(spacing)
    from scipy.spatial import QhullError

    pts = surface_points(m, sp)
    try:
        a, _ = min_volume_ellipsoid(pts[_hull(pts).vertices])
    except (QhullError, np.linalg.LinAlgError):  # all centres on one plane: no 3-D ellipsoid
        return None
    return _none_if_bad(m.sum() * np.prod(sp) / ellipsoid_volume(a))


def largest_slice(mask: np.ndarray) -> int | None:
    """Index (axis 0) of the slice with the most tumour pixels; None for an empty mask."""
    m = np.asarray(mask).astype(bool)
    if m.ndim != 3 or not m.any():
        return None
    return int(np.argmax(m.reshape(m.shape[0], -1).sum(axis=1)))


def _main_component(slice_mask: np.ndarray) -> np.ndarray | None:
    labels, n = ndimage.label(slice_mask)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    comp = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    return comp if comp.sum() >= MIN_SLICE_PIXELS else None


def _outline(comp: np.ndarray, pixel: tuple[float, float]) -> np.ndarray:
    """The outer outline of ``comp``, in mm, resampled every half pixel: (N, 2) closed curve."""
    from skimage.measure import find_contours

    contours = find_contours(np.pad(comp, 1).astype(np.float32), 0.5)
    c = max(contours, key=len) - 1.0
    c = c * np.asarray(pixel)
    if not np.allclose(c[0], c[-1]):
        c = np.vstack([c, c[:1]])
    seg = np.hypot(*np.diff(c, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    step = 0.5 * min(pixel)
    t = np.arange(0.0, s[-1], step)
    return np.column_stack([np.interp(t, s, c[:, 0]), np.interp(t, s, c[:, 1])])


def _radial(slice_mask: np.ndarray, pixel: tuple[float, float]):
    """(radii, angles) of the outline of the slice's main component about its centroid."""
    comp = _main_component(np.asarray(slice_mask).astype(bool))
    if comp is None:
        return None
    centroid = np.argwhere(comp).mean(axis=0) * np.asarray(pixel)
    d = _outline(comp, pixel) - centroid
    return np.hypot(d[:, 0], d[:, 1]), np.arctan2(d[:, 0], d[:, 1])


def angular_sd(slice_mask: np.ndarray, pixel=(1.0, 1.0)) -> float | None:
    """Mean over ten 36-degree sectors of the SD of the radial distance, / mean radius (2-D)."""
    rad = _radial(slice_mask, tuple(pixel))
    if rad is None:
        return None
    r, theta = rad
    sector = np.floor((theta + math.pi) / (2 * math.pi) * SECTORS).astype(int) % SECTORS
    sds = [r[sector == k].std() for k in range(SECTORS) if np.count_nonzero(sector == k) >= 2]
    return float(np.mean(sds) / r.mean()) if sds else None


def margin_fluctuation(slice_mask: np.ndarray, pixel=(1.0, 1.0)) -> float | None:
    """SD of (radial distance - its moving average along the margin), / mean radius (2-D)."""
    rad = _radial(slice_mask, tuple(pixel))
    if rad is None:
        return None
    r = rad[0]
    w = max(3, int(round(SMOOTHING_FRACTION * len(r))) | 1)  # odd window, 1/10 of the outline
    padded = np.concatenate([r[-(w // 2) :], r, r[: w // 2]])
    smooth = np.convolve(padded, np.ones(w) / w, mode="valid")
    return float(np.std(r - smooth) / r.mean())


def _none_if_bad(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _slice_descriptors(slice_mask: np.ndarray, pixel: tuple[float, float]) -> dict:
    from skimage.measure import regionprops

    keys = ("slice_area_mm2", "slice_perimeter_mm", "slice_eccentricity", "slice_solidity",
            "slice_major_axis_mm", "slice_minor_axis_mm")  # fmt: skip
    comp = _main_component(slice_mask)
    if comp is None:
        return dict.fromkeys(keys)
    p = regionprops(comp.astype(np.uint8), spacing=pixel)[0]
    outline = _outline(comp, pixel)  # regionprops' perimeter needs isotropic pixels
    perimeter = float(np.hypot(*np.diff(np.vstack([outline, outline[:1]]), axis=0).T).sum())
    vals = (p.area, perimeter, p.eccentricity, p.solidity, p.axis_major_length,
            p.axis_minor_length)  # fmt: skip
    return {k: _none_if_bad(v) for k, v in zip(keys, vals)}


def _volume_descriptors(m: np.ndarray, sp: tuple[float, float, float]) -> dict:
    from skimage.measure import marching_cubes, mesh_surface_area, regionprops

    out = dict.fromkeys(("components", "surface_mm2", "sphericity", "extent",
                         "major_axis_mm", "minor_axis_mm"))  # fmt: skip
    out["components"] = int(ndimage.label(m)[1])
    if min(m.shape) < 1 or not m.any():
        return out
    volume = float(m.sum() * np.prod(sp))
    p = regionprops(m.astype(np.uint8), spacing=sp)[0]
    out["extent"] = _none_if_bad(p.extent)
    if any(s < 2 for s in (np.ptp(np.argwhere(m), axis=0) + 1)):
        return out  # flat: no surface mesh, no hull, no 3-D axes
    verts, faces, _, _ = marching_cubes(np.pad(m, 1).astype(np.float32), 0.5, spacing=sp)
    surface = float(mesh_surface_area(verts, faces))
    out["surface_mm2"] = surface
    out["sphericity"] = _none_if_bad(math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / surface)
    out["major_axis_mm"] = _none_if_bad(p.axis_major_length)
    out["minor_axis_mm"] = _none_if_bad(p.axis_minor_length)
    return out


def study_features(mask: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> dict[str, float | None]:
    """``volume_ml`` and the three study features only (no descriptors): what the Segment
    widget shows; a few tens of ms for a typical LGG mask, still best off the GUI thread."""
    m = np.asarray(mask)
    if m.ndim != 3:
        raise ValueError(f"a tumour mask is a (Z, Y, X) volume, got shape {m.shape}")
    m = m > 0
    sp = _spacing3(spacing)
    z = largest_slice(m)
    if z is not None:
        box = ndimage.find_objects(m.astype(np.uint8))[0]
        m, z = m[box], z - box[0].start
    return {
        "volume_ml": float(m.sum() * np.prod(sp) / 1000.0),
        "bounding_ellipsoid_volume_ratio": bounding_ellipsoid_volume_ratio(m, sp),
        "angular_sd": None if z is None else angular_sd(m[z], sp[1:]),
        "margin_fluctuation": None if z is None else margin_fluctuation(m[z], sp[1:]),
    }


def shape_features(mask: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> dict[str, float | int | None]:
    """All features of a (Z, Y, X) tumour mask with voxel ``spacing`` (mm, Z Y X), in this order:
    ``volume_ml``, the three study features (``THREE_FEATURES``), then descriptors. Values that
    are not defined for this mask are None. Qt-free; the Segment widget, ``lggseg features``
    and training/radiogenomics.py all call this."""
    m = np.asarray(mask)
    if m.ndim != 3:
        raise ValueError(f"a tumour mask is a (Z, Y, X) volume, got shape {m.shape}")
    m = m > 0
    sp = _spacing3(spacing)
    z = largest_slice(m)
    z0 = 0
    if z is not None:  # every feature is translation-invariant: work on the bounding box
        box = ndimage.find_objects(m.astype(np.uint8))[0]
        z0 = box[0].start
        m, z = m[box], z - z0
    pixel = (sp[1], sp[2])
    feats: dict[str, float | int | None] = {
        "volume_ml": float(m.sum() * np.prod(sp) / 1000.0),
        "bounding_ellipsoid_volume_ratio": bounding_ellipsoid_volume_ratio(m, sp),
        "angular_sd": None if z is None else angular_sd(m[z], pixel),
        "margin_fluctuation": None if z is None else margin_fluctuation(m[z], pixel),
        "voxels": int(m.sum()),
        "tumour_slices": int(np.count_nonzero(m.reshape(m.shape[0], -1).any(axis=1))),
        "largest_slice": None if z is None else z + z0,
    }
    feats.update(_volume_descriptors(m, sp))
    if z is None:
        feats.update(_slice_descriptors(np.zeros((1, 1), bool), pixel))
    else:
        feats.update(_slice_descriptors(m[z], pixel))
    return feats


# --------------------------------------------------------------------------- one row per patient

FEATURE_KEYS = (
    "volume_ml",
    *THREE_FEATURES,
    "voxels",
    "tumour_slices",
    "largest_slice",
    "components",
    "surface_mm2",
    "sphericity",
    "extent",
    "major_axis_mm",
    "minor_axis_mm",
    "slice_area_mm2",
    "slice_perimeter_mm",
    "slice_eccentricity",
    "slice_solidity",
    "slice_major_axis_mm",
    "slice_minor_axis_mm",
)
ROW_KEYS = ("patient", *FEATURE_KEYS, "spacing_mm", "masks")
CLINICAL_TABLE = "data.csv"


def spacing_text(spacing) -> str:
    """``(1.0, 0.5, 0.5)`` -> ``'1 0.5 0.5'`` (Z Y X, mm): the CSV's spacing column."""
    return " ".join(f"{s:g}" for s in _spacing3(spacing))


def feature_row(patient_id: str, mask: np.ndarray, spacing, masks: str) -> dict:
    """One CSV row: ``ROW_KEYS`` (``masks`` says where the mask came from)."""
    return {
        "patient": patient_id,
        **shape_features(mask, spacing),
        "spacing_mm": spacing_text(spacing),
        "masks": masks,
    }


def read_clinical_table(root) -> tuple[list[str], dict[str, dict[str, str]]] | None:
    """The genomic/clinical ``data.csv`` of a dataset root (as in kaggle_3m): ``(columns,
    rows by id)``; None when the root has none. Its ids (``TCGA_CS_4941``) lack the folders'
    date suffix (``TCGA_CS_4941_19960909``): see :func:`clinical_for`."""
    import csv
    from pathlib import Path

    from .lgg_io import LGGFormatError

    path = Path(root) / CLINICAL_TABLE
    if not path.is_file():
        return None
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            rows = {r[0]: dict(zip(header[1:], r[1:])) for r in reader if r}
    except (OSError, UnicodeDecodeError, csv.Error, StopIteration) as exc:
        raise LGGFormatError(f"{path}: cannot read this table ({exc or 'empty file'})") from exc
    if not header or header[0].strip().lower() != "patient":
        raise LGGFormatError(f"{path}: its first column should be 'Patient', found {header[:1]}")
    return header[1:], rows


def clinical_for(patient_id: str, rows: dict[str, dict[str, str]]) -> dict[str, str] | None:
    """The ``data.csv`` row of a patient folder id: the same id, or the id without its
    ``_<date>`` suffix (the longest matching prefix wins)."""
    if patient_id in rows:
        return rows[patient_id]
    prefixes = [k for k in rows if patient_id.startswith(k + "_")]
    return rows[max(prefixes, key=len)] if prefixes else None
