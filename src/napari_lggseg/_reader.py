"""napari reader: LGG patient folders, single slices, corrections folders and dataset roots.

``get_reader`` decides from names alone and never raises, so napari can try other readers.
What it accepts:

* a patient folder ``P/`` (``P_<n>.tif`` slices), or a folder named like a TCGA patient even when
  it is broken -- then reading raises ``LGGFormatError`` naming the bad file, which napari shows;
* one slice ``P/P_<n>.tif`` or ``P/P_<n>_mask.tif``: opens the whole patient;
* a corrections folder (holds ``lggseg_corrections.json``): the patient's images plus the
  corrected mask as a Labels layer ``"<P> corrections"``;
* a ``kaggle_3m``-style root: opens its first patient (by name) and says so in a warning,
  because all 80 patients at once would be about 320 layers and gigabytes of memory.

No Qt and no napari import: the layer data are plain tuples.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from .layer_meta import META_KEY, PLUGIN
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
        return None, None
    parsed = parse_slice_name(path.name)
    if path.is_file() and parsed and parsed[0] == path.parent.name:
        if is_corrections_folder(path.parent):
            return "corrections", path.parent
        return "patient", path.parent
    return None, None


def read_lgg_path(path: str | os.PathLike, kind: str | None = None) -> list[tuple]:
    """Layer data for a patient, corrections folder or root (see the module docstring)."""
    path = Path(path)
    if kind is None:
        kind, found = _classify(path)
        if kind is None:
            raise ValueError(
                f"{path}: not an LGG patient folder, slice, corrections folder or dataset root"
            )
        path = found
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
