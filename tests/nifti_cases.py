"""Synthetic NIfTI cases written with nibabel: one phantom head in world (RAS mm) coordinates,
sampled on any grid, so files stored in different orientations show the same anatomy.

The head is an ellipsoid centred at the world origin; the lesion, bright in FLAIR, sits front,
left and up of the centre, so a wrong flip or axis order moves it.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

BRATS18 = {"FLAIR": "flair", "pre-contrast": "t1", "post-contrast": "t1ce", "T2": "t2"}
HEAD_RADII = np.array([60.0, 75.0, 55.0])  # x (L-R), y (A-P), z (S-I) mm
LESION_CENTRE = np.array([-25.0, 30.0, 15.0])  # RAS: patient's left (x < 0), front, up
LESION_RADIUS = 14.0
_LEVELS = {"FLAIR": (300.0, 700.0), "pre-contrast": (400.0, 250.0), "post-contrast": (500.0, 900.0)}
_LEVELS["T2"] = (350.0, 800.0)


def affine_for(codes: str = "LPS", spacing=(1.0, 1.0, 1.0), shape=(48, 48, 40), angle=0.0):
    """An affine whose voxel axes point along ``codes`` (e.g. ``'RAS'``, ``'LPS'``, ``'PIL'``),
    with ``spacing`` mm per voxel axis, rotated ``angle`` degrees about the foot-head axis, and
    centred so the grid's middle is at the world origin."""
    ornt = nio.axcodes2ornt(codes)
    rot = np.zeros((3, 3))
    for axis, (world, flip) in enumerate(ornt):
        rot[int(world), axis] = flip * spacing[axis]
    a = np.radians(angle)
    tilt = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = tilt @ rot
    aff[:3, 3] = -aff[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return aff


def world_of(affine, shape) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def phantom(world: np.ndarray, sequence: str = "FLAIR") -> tuple[np.ndarray, np.ndarray]:
    """(intensity float32, lesion uint8) at world points (..., 3)."""
    head = ((world / HEAD_RADII) ** 2).sum(-1) <= 1.0
    lesion = np.linalg.norm(world - LESION_CENTRE, axis=-1) <= LESION_RADIUS
    tissue, tumour = _LEVELS[sequence]
    value = np.where(head, tissue, 0.0) + np.where(lesion & head, tumour - tissue, 0.0)
    value = value + 20.0 * np.sin(world[..., 0] / 7.0) * head  # texture: not a flat blob
    return value.astype(np.float32), (lesion & head).astype(np.uint8)


def write_nifti(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray,
    qform_code: int = 1,
    sform_code: int = 1,
    nifti2: bool = False,
    dtype=np.int16,
) -> Path:
    cls = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    img = cls(np.asarray(data).astype(dtype), None)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.to_filename(path)
    return path


def write_case(
    folder: Path,
    affine=None,
    shape=(48, 48, 40),
    sequences=("FLAIR", "pre-contrast", "post-contrast", "T2"),
    label: bool = True,
    names: dict | None = None,
    **write_kwargs,
) -> Path:
    """A BraTS-2018-style case folder ``folder/<name>_<seq>.nii.gz`` (+ ``_seg``)."""
    affine = affine_for(shape=shape) if affine is None else affine
    names = {**BRATS18, **(names or {})}
    world = world_of(affine, shape)
    folder.mkdir(parents=True, exist_ok=True)
    for seq in sequences:
        value, _ = phantom(world, seq)
        write_nifti(folder / f"{folder.name}_{names[seq]}.nii.gz", value, affine, **write_kwargs)
    if label:
        _, lesion = phantom(world)
        seg = lesion * 2  # BraTS labels 1, 2, 4: any label > 0 is tumour
        write_nifti(
            folder / f"{folder.name}_seg.nii.gz", seg, affine, dtype=np.uint8, **write_kwargs
        )
    return folder


def lesion_in_model_orientation(shape_zyx, model_affine) -> np.ndarray:
    """The phantom's lesion sampled on a (Z, Y, X) grid with ``model_affine``."""
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape_zyx], indexing="ij"), -1)
    world = ijk @ model_affine[:3, :3].T + model_affine[:3, 3]
    return phantom(world)[1]
