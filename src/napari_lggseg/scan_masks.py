"""Masks saved on a scan's own grid: ``<case>_mask.nii.gz`` (uint8 0/1) with the FLAIR's exact
header geometry, and a JSON sidecar ``<case>_mask.json`` recording what the corrections folders
of :mod:`lgg_io` record (kind, reviewed slices, model, source). No Qt, no torch.

Masks never go into a case's own folder, nor into a folder holding scans, and a prediction never
replaces corrections a person made; each file is written atomically (:mod:`atomic`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .cases import read_case
from .scan_io import (
    FLAIR_SEQ,
    MASK_SIDECAR_SUFFIX,
    MASK_SUFFIX,
    ScanCase,
    ScanFormatError,
    ScanHeader,
    ScanWriteError,
    load_nifti,
    nifti_files,
    same_grid,
    volume_shape,
)

MASK_FORMAT = "napari-lggseg nifti mask"
KINDS = ("prediction", "corrections")


def mask_paths(out_folder: str | os.PathLike, case_id: str) -> tuple[Path, Path]:
    """``<out>/<case>_mask.nii.gz`` and its sidecar ``<out>/<case>_mask.json``."""
    out = Path(out_folder)
    return out / f"{case_id}{MASK_SUFFIX}", out / f"{case_id}{MASK_SIDECAR_SUFFIX}"


def _read_sidecar(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ScanFormatError(f"{path}: no sidecar beside the mask") from None
    except (OSError, ValueError) as exc:
        raise ScanFormatError(f"{path}: cannot read the sidecar ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != MASK_FORMAT:
        raise ScanFormatError(f"{path}: not a napari-lggseg mask sidecar")
    return meta


def _check_mask_target(out: Path, case: ScanHeader, kind: str) -> None:
    from .dicom_io import is_dicom_folder

    sources = {p.parent.resolve() for p in case.files.values()}
    if case.source.is_dir():
        sources.add(case.source.resolve())  # a DICOM study: its series are in sub-folders
    if out.exists() and not out.is_dir():
        raise ScanWriteError(f"{out}: exists and is not a folder; masks are saved into a folder")
    if out.resolve() in sources:
        raise ScanWriteError(
            f"{out}: this folder holds the scans of {case.case_id}; masks go to a folder of "
            "their own so the source files are never touched"
        )
    if not out.is_dir():
        return
    scans = [p.name for p in nifti_files(out) if not p.name.endswith(MASK_SUFFIX)]
    if not scans and is_dicom_folder(out):
        scans = ["DICOM files"]
    if scans:
        raise ScanWriteError(
            f"{out}: this folder holds scans ({scans[0]}); save masks to a new folder or one "
            "holding only saved masks"
        )
    mask_file, sidecar = mask_paths(out, case.case_id)
    if kind == "prediction" and sidecar.is_file():
        try:
            earlier = json.loads(sidecar.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            earlier = "unknown"
        if earlier != "prediction":
            raise ScanWriteError(
                f"{mask_file}: holds {earlier or 'unknown'} masks of {case.case_id}; a prediction "
                "never replaces them: choose another folder"
            )


def mask_image(case: ScanHeader, mask: np.ndarray):
    """A (Z, Y, X) mask -> a uint8 0/1 NIfTI image with the FLAIR's header geometry (affine,
    qform/sform and codes, voxel sizes, units) in the FLAIR's voxel order."""
    ref = case.reference
    header = ref.header.copy()
    data = case.orientation.to_file((np.asarray(mask) > 0).astype(np.uint8))
    img = type(ref)(data, ref.affine, header)  # the header's own affine: codes kept as they are
    img.header.set_data_dtype(np.uint8)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"], img.header["cal_max"] = 0.0, 1.0
    img.header["descrip"] = b"napari-lggseg tumour mask"
    img.header["intent_code"] = 0  # a label image, whatever the FLAIR's intent was
    return img


def save_mask(
    case: ScanHeader,
    mask: np.ndarray,
    out_folder: str | os.PathLike,
    *,
    kind: str = "prediction",
    reviewed_slices=(),
    model: str | None = None,
    whole_volume_reviewed: bool = False,
    extra: dict | None = None,
) -> Path:
    """Write ``mask`` (Z, Y, X on the case's grid; > 0 is tumour) as ``<out>/<case>_mask.nii.gz``
    plus a JSON sidecar (kind ``prediction`` or ``corrections``, reviewed slices as 0-based
    indices along Z, model, source files), each atomically; returns the mask's path. ``case``
    is a :class:`ScanCase` or only its :class:`ScanHeader` (:func:`cases.read_header`).

    Refuses the case's own folder, a folder holding scans, and a prediction over earlier
    corrections. Shapes must match: a mask of another case is refused.
    """
    from .atomic import staged_file, write_text

    mask = np.asarray(mask)
    if mask.shape != case.shape:
        raise ScanFormatError(
            f"mask of shape {mask.shape} for {case.case_id}, whose scan has {case.shape} "
            "voxels: refusing to save a mask of another scan"
        )
    if kind not in KINDS:
        raise ValueError(f"kind must be 'prediction' or 'corrections', not {kind!r}")
    out = Path(out_folder)
    _check_mask_target(out, case, kind)
    reviewed = sorted({int(i) for i in reviewed_slices})
    if any(i < 0 or i >= case.shape[0] for i in reviewed):
        raise ValueError(f"reviewed slice indices {reviewed} outside 0..{case.shape[0] - 1}")
    sidecar = {
        "format": MASK_FORMAT,
        "version": 1,
        "case_id": case.case_id,
        "kind": kind,
        "source": str(case.source.resolve()),
        "source_files": {seq: str(p.resolve()) for seq, p in case.files.items()},
        "shape": list(case.reference.shape[:3]),
        "slice_axis": "Z of the model orientation (axial, foot to head)",
        "reviewed_slices": reviewed,
        "whole_volume_reviewed": bool(whole_volume_reviewed),
        "model": model,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    mask_file, sidecar_file = mask_paths(out, case.case_id)
    img = mask_image(case, mask)
    try:
        with staged_file(mask_file) as tmp:
            img.to_filename(tmp)
        write_text(sidecar_file, json.dumps(sidecar, indent=2))
    except OSError as exc:
        raise ScanWriteError(f"{out}: cannot save the mask here ({exc.strerror or exc})") from exc
    return mask_file


@dataclass
class SavedMask:
    """A mask saved by :func:`save_mask`, back on its case's grid, with its sidecar."""

    case: ScanCase
    mask: np.ndarray  # (Z, Y, X) uint8 0/1
    path: Path
    kind: str
    reviewed_slices: list[int]
    model: str | None
    whole_volume_reviewed: bool
    sidecar: dict


def read_saved_mask(path: str | os.PathLike, all_sequences: bool = False) -> SavedMask:
    """Reopen a saved mask (its file, its sidecar, or a folder holding one) with its case,
    read again from the source the sidecar names."""
    path = Path(path)
    if path.is_dir():
        sidecars = sorted(path.glob(f"*{MASK_SIDECAR_SUFFIX}"))
        if len(sidecars) != 1:
            raise ScanFormatError(
                f"{path}: holds {len(sidecars)} saved masks; open one of its *{MASK_SUFFIX} files"
            )
        path = sidecars[0]
    stem = path.name[: -len(MASK_SUFFIX)] if path.name.endswith(MASK_SUFFIX) else None
    if stem is None and path.name.endswith(MASK_SIDECAR_SUFFIX):
        stem = path.name[: -len(MASK_SIDECAR_SUFFIX)]
    if stem is None:
        raise ScanFormatError(f"{path}: not a mask saved by napari-lggseg (*{MASK_SUFFIX})")
    mask_file, sidecar_file = mask_paths(path.parent, stem)
    meta = _read_sidecar(sidecar_file)
    source = Path(meta.get("source", ""))
    if not source.exists():
        raise ScanFormatError(
            f"{sidecar_file}: its source scan {source} does not exist (moved or deleted?); edit "
            "'source' in the sidecar to point at the case"
        )
    from . import dicom_io

    if dicom_io.is_dicom_case(source):  # the series the mask was saved on, not a new choice
        mapping = meta.get("source_files")
        case = dicom_io.read_dicom_case(source, mapping=mapping, all_sequences=all_sequences)
    else:
        case = read_case(source, all_sequences=all_sequences)
    img = load_nifti(mask_file)
    if volume_shape(img, mask_file) != tuple(case.reference.shape[:3]) or not same_grid(
        img.affine, case.affine
    ):
        raise ScanFormatError(
            f"{mask_file}: its grid differs from its source scan {case.files[FLAIR_SEQ]}"
        )
    data = np.asanyarray(img.dataobj).reshape(case.reference.shape[:3])
    return SavedMask(
        case,
        case.orientation.to_model((data > 0).astype(np.uint8)),
        mask_file,
        str(meta.get("kind", "corrections")),
        [int(i) for i in meta.get("reviewed_slices", [])],
        meta.get("model"),
        bool(meta.get("whole_volume_reviewed", False)),
        meta,
    )
