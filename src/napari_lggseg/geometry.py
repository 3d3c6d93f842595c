"""Scan geometry: the model's axial orientation, through-plane resampling, and the one function
that segments a scan case on its own grid. No Qt; torch only through ``inference``.

Conventions (used by :mod:`scan_io`, the reader, the writer and the CLI):

* A file's voxel axes are ``(i, j, k)`` and its affine maps them to RAS+ mm (nibabel).
* The *model orientation* is the LGG set's: arrays ``(Z, Y, X)`` with Z towards the head's top
  (superior), Y from front to back (posterior) and X from the patient's right to left -- axial
  slices shown as radiologists do, which is how the TIFF slices of the LGG set are stored
  (slice 1 at the skull base, eyes at the top of each slice). In nibabel's terms the voxel axes
  ``(X, Y, Z)`` are ``L, P, S``, so a BraTS file (LPS) only needs its axes reversed.
* :class:`Orientation` reorients a file's array into that order without interpolation (axis
  permutations and flips only) and back exactly, so a mask saved from the model-orientation grid
  has the file's own voxel order.
* The slice spacing matters for the 2.5-D context (neighbouring slices as channels): the LGG
  set's FLAIR slices are thick (20-88 slices over the head, mostly 20-36: about 4-7 mm), so
  :func:`segment_case` resamples thin-slice scans through-plane to ``slice_spacing`` mm, runs the
  network, and maps the probabilities back onto the scan's slices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

# voxel axes (X, Y, Z) of the model orientation, in nibabel's axis codes
MODEL_AXCODES = ("L", "P", "S")
# through-plane spacing (mm) segment_case resamples thin slices to, unless the model's recipe
# names its own (``slice_spacing``). On the two BraTS-2018 cases (1 mm) with lgg-fast, mean Dice
# native 0.801, 3 mm 0.803, 4 mm 0.798, 5 mm 0.792, 6 mm 0.784: resampling costs little and makes
# the network see 4x fewer slices (README "Opening NIfTI scans")
DEFAULT_SLICE_SPACING = 4.0
_RESAMPLE_MIN_RATIO = 1.5  # resample only when the slices are this much thinner than the target
_AXIS_WORDS = {0: "left-right", 1: "front-back", 2: "foot-head"}


def _nio():
    """nibabel's orientation tools, imported when first used (the reader's claim check, which
    imports this module, stays light)."""
    from nibabel import orientations

    return orientations


@dataclass(frozen=True, eq=False)
class Orientation:
    """How a file's voxel array becomes a model-orientation ``(Z, Y, X)`` array and back."""

    start: np.ndarray  # nibabel ornt of the file's voxel axes (io_orientation of its affine)
    file_shape: tuple[int, int, int]

    @classmethod
    def of(cls, affine: np.ndarray, shape) -> Orientation:
        start = _nio().io_orientation(np.asarray(affine, float))
        return cls(start, tuple(int(s) for s in shape[:3]))

    @property
    def transform(self) -> np.ndarray:
        """nibabel ornt transform: file voxel axes -> (X, Y, Z) = L, P, S."""
        return _nio().ornt_transform(self.start, _nio().axcodes2ornt(MODEL_AXCODES))

    @property
    def is_identity(self) -> bool:
        """The file is already stored as the model wants (BraTS, the usual LPS layout)."""
        return bool(
            (self.transform[:, 0] == np.arange(3)).all() and (self.transform[:, 1] == 1).all()
        )

    @property
    def slice_axis(self) -> int:
        """The file voxel axis that becomes the model's slice axis Z (2 for axial files)."""
        return int(np.nonzero(self.transform[:, 0] == 2)[0][0])

    def to_model(self, file_array: np.ndarray) -> np.ndarray:
        """File voxel array ``(i, j, k[, ...])`` -> model-orientation ``(Z, Y, X[, ...])``."""
        arr = _nio().apply_orientation(file_array, self.transform)
        return np.swapaxes(arr, 0, 2)

    def to_file(self, model_array: np.ndarray) -> np.ndarray:
        """Model-orientation ``(Z, Y, X)`` array -> the file's voxel order ``(i, j, k)``, exactly."""
        arr = np.swapaxes(np.asarray(model_array), 0, 2)
        back = _nio().ornt_transform(_nio().axcodes2ornt(MODEL_AXCODES), self.start)
        return np.ascontiguousarray(_nio().apply_orientation(arr, back))

    def model_affine(self, affine: np.ndarray) -> np.ndarray:
        """Affine of the model-orientation array: ``(z, y, x, 1)`` index -> RAS+ mm."""
        reoriented = np.asarray(affine, float) @ _nio().inv_ornt_aff(
            self.transform, self.file_shape
        )
        return reoriented[:, [2, 1, 0, 3]]

    def describe(self, affine: np.ndarray) -> list[str]:
        """Notes for the user: what the reorientation did, and how oblique the scan is."""
        notes = []
        across = _world_axis_of(affine, 2)  # the world axis the file's slices are stacked along
        if across != 2:
            plane = {0: "sagittal", 1: "coronal"}[across]
            notes.append(
                f"acquired as {plane} slices (stacked {_AXIS_WORDS[across]}); reoriented to "
                "axial slices for the model and the view"
            )
        elif not self.is_identity:
            notes.append(
                f"stored as {''.join(_nio().aff2axcodes(affine))}; axes flipped to the model's "
                "axial orientation (LPS: slices foot to head, front at the top, patient's "
                "right on the left)"
            )
        angle = obliquity_degrees(affine)
        if angle > 1.0:
            notes.append(
                f"oblique by {angle:.0f} degrees: the view shows the voxel grid; masks are saved "
                "with the file's own affine"
            )
        return notes


def _world_axis_of(affine: np.ndarray, voxel_axis: int) -> int:
    return int(np.argmax(np.abs(np.asarray(affine, float)[:3, voxel_axis])))


def spacing_of(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each voxel axis of ``affine`` (column norms)."""
    return np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=0))


def obliquity_degrees(affine: np.ndarray) -> float:
    """Largest angle (degrees) between a voxel axis and the world axis closest to it."""
    cols = np.asarray(affine, float)[:3, :3]
    cos = np.abs(cols).max(axis=0) / np.maximum(spacing_of(affine), 1e-12)
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).max())


def napari_transform(model_affine: np.ndarray) -> dict:
    """``scale`` and ``translate`` (napari's (Z, Y, X) order, mm) for a model-orientation array.

    World coordinates are LPS mm (DICOM's, the model orientation's own), so the axes of the
    view grow the way the array does: an axial scan's world position is exact; an oblique
    scan's rotation is left out (napari cannot slice obliquely) and kept in the metadata.
    """
    a = np.asarray(model_affine, float)
    lps = np.diag([-1.0, -1.0, 1.0]) @ a[:3, 3]
    return {
        "scale": tuple(float(s) for s in spacing_of(a)),
        "translate": (float(lps[2]), float(lps[1]), float(lps[0])),
    }


# --------------------------------------------------------------------------- resampling


def resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of a linear resampling of one axis, antialiased when shrinking.

    Sample centres are aligned (voxel ``o`` of the output covers ``n_in / n_out`` input voxels),
    and shrinking averages with a triangle as wide as the output voxel, as a thick slice
    averages the tissue it covers. Rows sum to 1.
    """
    scale = n_in / n_out
    centres = (np.arange(n_out) + 0.5) * scale - 0.5
    radius = max(1.0, scale)
    dist = np.abs(np.arange(n_in)[None, :] - centres[:, None])
    w = np.clip(1.0 - dist / radius, 0.0, None)
    empty = w.sum(axis=1) == 0
    if empty.any():  # beyond the edge: take the nearest voxel
        w[empty, np.clip(np.rint(centres[empty]).astype(int), 0, n_in - 1)] = 1.0
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def resample_axis0(volume: np.ndarray, n_out: int) -> np.ndarray:
    """Resample the first axis of ``volume`` to ``n_out`` samples (see :func:`resample_matrix`).

    Each output slice is a weighted sum of the few input slices its row weights (a band), so
    155 -> 39 slices of a BraTS volume costs a few slice additions, not a dense product."""
    volume = np.asarray(volume, np.float32)
    if volume.shape[0] == n_out:
        return volume
    m = resample_matrix(volume.shape[0], n_out)
    out = np.empty((n_out, *volume.shape[1:]), np.float32)
    for o, row in enumerate(m):
        taps = np.nonzero(row)[0]
        np.multiply(volume[taps[0]], row[taps[0]], out=out[o])
        for i in taps[1:]:
            out[o] += row[i] * volume[i]
    return out


def through_plane_slices(n_slices: int, spacing_z: float, target: float | None) -> int:
    """How many slices the network sees: ``n_slices`` unless they are much thinner than
    ``target`` mm, then as many as ``target``-mm slices covering the same extent."""
    if not target or spacing_z <= 0 or spacing_z * _RESAMPLE_MIN_RATIO > target:
        return n_slices
    return max(1, int(round(n_slices * spacing_z / target)))


class GridsApartError(ValueError):
    """Two grids that (nearly) do not overlap in world space."""


MIN_OVERLAP = 0.05  # fraction of a target grid another volume must cover to be resampled onto it


def resample_onto(data: np.ndarray, affine, target_affine, target_shape) -> np.ndarray:
    """Resample ``data`` (voxels on ``affine``) onto another grid through world coordinates
    (trilinear; outside ``data``: its minimum, its background). No registration: the headers
    must be right. Raises GridsApartError when the grids hardly overlap."""
    from scipy import ndimage

    to_src = np.linalg.inv(np.asarray(affine, float)) @ np.asarray(target_affine, float)
    probe = np.stack(
        np.meshgrid(*[np.linspace(0, s - 1, 9) for s in target_shape], indexing="ij"), -1
    ).reshape(-1, 3)
    src = probe @ to_src[:3, :3].T + to_src[:3, 3]
    inside = ((src >= -0.5) & (src <= np.array(data.shape) - 0.5)).all(axis=1).mean()
    if inside < MIN_OVERLAP:
        raise GridsApartError(f"it covers {inside:.0%} of the target grid")
    return ndimage.affine_transform(
        data,
        to_src[:3, :3],
        offset=to_src[:3, 3],
        output_shape=tuple(target_shape),
        order=1,
        mode="constant",
        cval=float(data.min()),
    ).astype(np.float32)


# --------------------------------------------------------------------------- segmenting


def resolve_slice_spacing(slice_spacing, recipe=None) -> float | None:
    """``"auto"`` -> the recipe's ``slice_spacing`` if it names one, else the default."""
    if slice_spacing == "auto":
        return getattr(recipe, "slice_spacing", DEFAULT_SLICE_SPACING)
    return None if slice_spacing is None else float(slice_spacing)


def to_network_slices(volume: np.ndarray, spacing_z: float, slice_spacing="auto", recipe=None):
    """A (Z, ...) volume (image, or a mask as float: threshold it at 0.5 after) resampled
    through-plane as :func:`segment_volume` shows it to the network; training uses the same."""
    target = resolve_slice_spacing(slice_spacing, recipe)
    n = np.shape(volume)[0]
    n_net = through_plane_slices(n, float(spacing_z), target)
    return resample_axis0(volume, n_net) if n_net != n else np.asarray(volume)


def segment_volume(
    segmenter,
    volume: np.ndarray,
    spacing,
    *,
    slice_spacing: float | str | None = "auto",
    threshold: float = 0.5,
    postprocess: str | None = None,
    missing: tuple[str, ...] | None = None,
    progress=None,
    cancel=None,
):
    """(Z, Y, X, 3) volume (channels pre-contrast, FLAIR, post-contrast; a missing one a copy of
    FLAIR) with its voxel ``spacing`` ((z, y, x) mm, e.g. a layer's ``scale``) -> an
    ``inference.Segmentation`` whose ``prob`` and ``mask`` lie on the volume's own grid.

    Slices thinner than ``slice_spacing / 1.5`` mm are resampled to ``slice_spacing`` for the
    network (None: never; ``"auto"``: the recipe's ``slice_spacing`` if it names one, else
    :data:`DEFAULT_SLICE_SPACING`) and the probabilities mapped back linearly. In-plane size and
    field of view are the recipe's (head crop, square pad, resize).
    """
    from .inference import Segmentation
    from .lgg_io import missing_sequences

    t0 = time.perf_counter()
    image = np.asarray(volume)
    net_input = to_network_slices(image, spacing[0], slice_spacing, segmenter.recipe)
    prob, _ = segmenter.probabilities(net_input, progress, cancel)
    if len(prob) != len(image):
        prob = resample_axis0(prob, len(image))  # convex weights: stays within [0, 1]
    seg = Segmentation(
        np.ascontiguousarray(prob, dtype=np.float32),
        threshold,
        postprocess or segmenter.default_postprocess,
        segmenter.name,
        tuple(missing_sequences(image) if missing is None else missing),
        0.0,
        str(segmenter.device),
    )
    seg.seconds = time.perf_counter() - t0
    return seg


def segment_case(segmenter, case, **kwargs):
    """Segment a :class:`~napari_lggseg.scan_io.ScanCase` -> an ``inference.Segmentation`` on the
    case's own grid (``case.shape``, model orientation; :meth:`Orientation.to_file` gives the
    file's voxel order). Keyword arguments as :func:`segment_volume`."""
    return segment_volume(
        segmenter, case.image, case.spacing, missing=case.missing_sequences, **kwargs
    )
