"""napari reader: LGG patient folders, single slices, corrections folders and dataset roots;
NIfTI scan cases, folders of them and masks saved on them.

``get_reader`` decides from names alone and never raises, so napari can try other readers.
What it accepts:

* a patient folder ``P/`` (``P_<n>.tif`` slices), or a folder named like a TCGA patient even when
  it is broken -- then reading raises ``LGGFormatError`` naming the bad file, which napari shows;
* one slice ``P/P_<n>.tif`` or ``P/P_<n>_mask.tif``: opens the whole patient;
* a corrections folder (holds ``lggseg_corrections.json``): the patient's images plus the
  corrected mask as a Labels layer ``"<P> corrections"``;
* a ``kaggle_3m``-style root: opens its first patient (by name) and says so in a warning,
  because all 80 patients at once would be about 320 layers and gigabytes of memory;
* a NIfTI file (``.nii``/``.nii.gz``: the FLAIR unless named otherwise, or one sequence of its
  case folder, which then opens whole), a case folder, or a folder of case folders (its first
  case, with a warning, as for the LGG root: a BraTS case is ~180 MB of layers): an Image per
  sequence present and the label file as the ground truth, in the model's axial orientation
  (:mod:`napari_lggseg.scan_io`), with ``scale`` = voxel spacing (mm) and ``translate`` = the
  position in LPS mm, so sequences and masks overlay and the 3-D view is not squashed;
* a folder or ``<case>_mask.nii.gz`` saved by the writer: the case plus that mask.

No Qt and no napari import: the layer data are plain tuples.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from . import scan_io
from .cases import find_cases, read_case
from .layer_meta import META_KEY, PLUGIN, Role, fields_from_sidecar, layer_kwargs, make_meta
from .lgg_io import (
    SEQUENCES,
    is_corrections_folder,
    is_patient_folder,
    is_patient_root,
    list_patients,
    missing_sequences,
    parse_slice_name,
    read_corrections,
    read_patient,
)

# TCGA_<institution>_<id>_<date>: a folder so named is taken even when broken, to report why
_TCGA_NAME = re.compile(r"^TCGA_[A-Za-z0-9]{2}_[A-Za-z0-9]{4}_\d{8}$")
# napari stacks layers in the order given, last on top: FLAIR above the other sequences
_IMAGE_ORDER = (0, 2, 1)


def get_reader(path):
    """Return a reader function for an LGG path, or None. Never raises."""
    try:
        if isinstance(path, (list, tuple)):
            if len(path) != 1:
                return None
            path = path[0]
        kind, target = _classify(Path(path))
    except Exception:  # a reader hook must not raise: napari then tries other readers
        return None
    if kind is None:
        return None

    def read(_path=None):
        return read_lgg_path(target, kind)

    return read


def _classify(path: Path) -> tuple[str | None, Path | None]:
    if path.is_dir():
        if is_corrections_folder(path):
            return "corrections", path
        if is_patient_folder(path) or _TCGA_NAME.match(path.name):
            return "patient", path
        if is_patient_root(path):
            return "root", path
        return _classify_nifti(path)
    parsed = parse_slice_name(path.name)
    if path.is_file() and parsed and parsed[0] == path.parent.name:
        if is_corrections_folder(path.parent):
            return "corrections", path.parent
        return "patient", path.parent
    return _classify_nifti(path)


def _classify_nifti(path: Path) -> tuple[str | None, Path | None]:
    if scan_io.is_mask_folder(path):
        return "nifti-mask", path
    if path.is_file() and path.name.endswith(scan_io.MASK_SUFFIX):
        sidecar = path.with_name(
            path.name[: -len(scan_io.MASK_SUFFIX)] + scan_io.MASK_SIDECAR_SUFFIX
        )
        if sidecar.is_file():
            return "nifti-mask", path
    cases = find_cases(path)
    if not cases:
        return None, None
    return ("nifti", path) if cases == [path] else ("nifti-root", path)


def read_lgg_path(path: str | os.PathLike, kind: str | None = None) -> list[tuple]:
    """Layer data for a patient, corrections folder or root (see the module docstring)."""
    path = Path(path)
    if kind is None:
        kind, found = _classify(path)
        if kind is None:
            raise ValueError(
                f"{path}: not an LGG patient folder, slice, corrections folder or dataset root, "
                "nor a NIfTI scan"
            )
        path = found
    if kind.startswith("nifti"):
        return read_nifti_path(path, kind)
    if kind == "corrections":
        corr = read_corrections(path)
        patient = read_patient(corr.source_folder)
        if corr.mask.shape != patient.image.shape[:3]:
            raise ValueError(
                f"{path}: corrections of shape {corr.mask.shape} do not match the images in "
                f"{corr.source_folder} {patient.image.shape[:3]}"
            )
        layers = patient_layers(
            patient.patient_id,
            patient.image,
            patient.mask,
            patient.folder,
            patient.slice_files,
            ground_truth_visible=False,
        )
        meta = _meta(patient.patient_id, patient.folder, patient.slice_files, "corrections")
        meta.update(
            corrections_folder=str(corr.folder),
            reviewed_slices=list(corr.reviewed_slices),
            model=corr.model,
            whole_volume_reviewed=corr.whole_volume_reviewed,
            **fields_from_sidecar(corr.extra),
        )
        layers.append(
            (
                corr.mask,
                {"name": f"{patient.patient_id} corrections", "metadata": {META_KEY: meta}},
                "labels",
            )
        )
        return layers
    if kind == "root":
        patients = list_patients(path)
        if not patients:
            raise ValueError(f"{path}: no patient folders in this folder")
        first = patients[0]
        if len(patients) > 1:
            warnings.warn(
                f"{path} holds {len(patients)} patients; opened the first, {first.name}. "
                "Open a patient folder to see another one.",
                stacklevel=2,
            )
        path = first
    patient = read_patient(path)
    return patient_layers(
        patient.patient_id, patient.image, patient.mask, patient.folder, patient.slice_files
    )


def _meta(patient_id: str, folder, slice_files, role: str) -> dict:
    return {
        "patient_id": patient_id,
        "folder": None if folder is None else str(folder),
        "slice_files": list(slice_files),
        "role": role,
    }


def contrast_limits(volume: np.ndarray) -> list[float]:
    """0.5th-99.5th percentile of the head (non-zero voxels), so one bright voxel or the black
    background does not wash the volume out."""
    sample = volume.ravel()[:: max(1, volume.size // 1_000_000)]
    sample = sample[sample > 0]
    if sample.size == 0:
        return [0.0, 255.0]
    lo, hi = np.percentile(sample, [0.5, 99.5])
    if hi <= lo:
        lo, hi = 0.0, max(float(hi), 1.0)
    return [float(lo), float(hi)]


def patient_layers(
    patient_id: str,
    image: np.ndarray,
    mask: np.ndarray | None,
    folder=None,
    slice_files=(),
    ground_truth_visible: bool = True,
) -> list[tuple]:
    """Layer tuples for one patient: an Image per sequence (FLAIR visible, on top) and the
    ground truth as Labels when there is a mask. Shared by the reader and the sample data."""
    missing = list(missing_sequences(image))
    layers: list[tuple] = []
    for c in _IMAGE_ORDER:
        seq = SEQUENCES[c]
        volume = image[..., c]
        meta = _meta(patient_id, folder, slice_files, "image")
        meta.update(sequence=seq, missing_sequences=missing)
        kwargs = {
            "name": f"{patient_id} {seq}",
            "colormap": "gray",
            "contrast_limits": contrast_limits(volume),
            "visible": c == 1,
            "metadata": {META_KEY: meta},
        }
        layers.append((volume, kwargs, "image"))
    if mask is not None:
        meta = _meta(patient_id, folder, slice_files, "ground truth")
        kwargs = {
            "name": f"{patient_id} ground truth",
            "metadata": {META_KEY: meta},
            "visible": ground_truth_visible,
            "opacity": 0.5,
        }
        layers.append((mask, kwargs, "labels"))
    return layers


# --------------------------------------------------------------------------- NIfTI

# stacking order, last on top: FLAIR above the others
_SCAN_ORDER = (scan_io.PRE, scan_io.POST, scan_io.T2, scan_io.FLAIR_SEQ)
_CHANNEL = {scan_io.PRE: 0, scan_io.FLAIR_SEQ: 1, scan_io.POST: 2}


def read_nifti_path(path: Path, kind: str) -> list[tuple]:
    """Layer data for a NIfTI case, a folder of cases (its first) or a saved mask."""
    if kind == "nifti-root":
        cases = find_cases(path)
        if not cases:
            raise scan_io.ScanFormatError(f"{path}: no NIfTI or DICOM cases in this folder")
        if len(cases) > 1:
            warnings.warn(
                f"{path} holds {len(cases)} cases; opened the first, {cases[0].name}. "
                "Open a case folder to see another one.",
                stacklevel=2,
            )
        path, kind = cases[0], "nifti"
    if kind == "nifti":
        case = read_case(path, all_sequences=True)
        _say_notes(case)
        return case_layers(case)
    from .scan_masks import read_saved_mask

    saved = read_saved_mask(path, all_sequences=True)
    _say_notes(saved.case)
    layers = case_layers(saved.case, ground_truth_visible=False)
    role = Role.PREDICTION if saved.kind == "prediction" else Role.CORRECTIONS
    meta = make_meta(
        saved.case.case_id,
        role,
        **_geometry_meta(saved.case),
        corrections_folder=str(saved.path.parent),
        reviewed_slices=list(saved.reviewed_slices),
        model=saved.model,
        whole_volume_reviewed=saved.whole_volume_reviewed,
        **fields_from_sidecar(saved.sidecar),
    )
    kwargs = layer_kwargs(f"{saved.case.case_id} {role}", meta, **_placement(saved.case))
    layers.append((saved.mask, kwargs, "labels"))
    return layers


def _say_notes(case) -> None:
    """What was done to the files (reoriented, resampled...), shown by napari as a notification."""
    if case.notes:
        warnings.warn(f"{case.case_id}: " + "; ".join(case.notes), stacklevel=3)


def _geometry_meta(case) -> dict:
    """Provenance and geometry for layer metadata: the files, what was opened (``scan_source``,
    which the writer reads the grid from) and the affine of the layer's own (Z, Y, X) array."""
    return {
        "source_paths": [str(p) for p in case.files.values()],
        "affine": case.model_affine,
        "spacing": case.spacing,
        "scan_source": str(case.source.resolve()),
    }


def _placement(case) -> dict:
    from .geometry import napari_transform

    return napari_transform(case.model_affine)


def _scan_contrast(volume: np.ndarray) -> list[float]:
    """Like :func:`contrast_limits` with the background at the volume's minimum (z-scored scans
    have a negative one)."""
    sample = volume.ravel()[:: max(1, volume.size // 1_000_000)]
    sample = sample[sample > sample.min()] if sample.size else sample
    if sample.size == 0:
        return [float(volume.min()), float(volume.min()) + 1.0]
    lo, hi = np.percentile(sample, [0.5, 99.5])
    return [float(lo), float(hi) if hi > lo else float(lo) + 1.0]


def case_layers(case, ground_truth_visible: bool = True) -> list[tuple]:
    """Layer tuples for a :class:`~napari_lggseg.scan_io.ScanCase`: an Image per sequence in
    its files (FLAIR visible, on top) and its label file as the ground truth."""
    geometry, placement = _geometry_meta(case), _placement(case)
    layers: list[tuple] = []
    for seq in _SCAN_ORDER:
        if seq in _CHANNEL and seq not in case.missing_sequences:
            volume = case.image[..., _CHANNEL[seq]]
        elif seq in case.others:
            volume = case.others[seq]
        else:
            continue
        meta = make_meta(
            case.case_id,
            Role.IMAGE,
            **geometry,
            sequence=seq,
            missing_sequences=list(case.missing_sequences),
            notes=list(case.notes),
        )
        kwargs = layer_kwargs(
            f"{case.case_id} {seq}",
            meta,
            colormap="gray",
            contrast_limits=_scan_contrast(volume),
            visible=seq == scan_io.FLAIR_SEQ,
            **placement,
        )
        layers.append((volume, kwargs, "image"))
    if case.label is not None:
        meta = make_meta(case.case_id, Role.GROUND_TRUTH, **geometry)
        kwargs = layer_kwargs(
            f"{case.case_id} ground truth",
            meta,
            visible=ground_truth_visible,
            opacity=0.5,
            **placement,
        )
        layers.append((case.label, kwargs, "labels"))
    return layers


def prefer_lggseg_reader(folder: str | os.PathLike) -> str:
    """Make napari open everything under ``folder`` with this plugin, without asking.

    napari asks which reader to use (or, from Python with ``plugin=None``, raises
    ``MultipleReaderError``) because its builtin reader also claims folders and ``.tif`` files.
    This stores ``'<folder>/*' -> napari-lggseg`` in napari's reader preferences (Preferences >
    Plugins lists and removes it). Returns the pattern.
    """
    from napari.settings import get_settings

    pattern = os.path.join(os.path.realpath(folder), "*")
    settings = get_settings().plugins
    settings.extension2reader = {**settings.extension2reader, pattern: PLUGIN}
    return pattern
