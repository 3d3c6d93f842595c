"""DICOM series -> the same :class:`~napari_lggseg.scan_io.ScanCase` as a NIfTI case. No Qt, no
torch; pydicom is the optional extra ``dicom`` (``pip install "napari-lggseg[dicom]"``).

Why pydicom and not SimpleITK's series reader: pydicom is pure Python (one small wheel, no
binary stack beside nibabel and scipy, which we already have), reads every header on its own so
series can be grouped and named from their tags (SeriesInstanceUID, SeriesDescription,
ProtocolName, ContrastBolusAgent) and checked slice by slice (missing or uneven slices, no
position) with messages naming the folder, and says which decoder package a compressed transfer
syntax needs. SimpleITK (a ~50 MB ITK build) would bring a second image model and affine
convention to keep in step with nibabel's. The geometry follows the DICOM standard (PS3.3
C.7.6.2.1.1, as pydicom's users apply it): pixel ``(row r, column c)`` of a slice lies at
``ImagePositionPatient + c * PixelSpacing[1] * row_cosines + r * PixelSpacing[0] *
column_cosines`` in LPS mm; slices are sorted along the normal ``row x column`` and their step
comes from the positions.

The voxel array is built as dcm2niix would write the series to NIfTI -- ``(i, j, k)`` = (column,
row, slice along the normal), affine LPS -> RAS+ -- and then goes through the very same
:class:`~napari_lggseg.geometry.Orientation` as NIfTI files, so a DICOM series and its NIfTI give
the same arrays and affine. ``ScanCase.reference`` is a pixel-less NIfTI header on the FLAIR's
grid, so :func:`napari_lggseg.scan_masks.save_mask` saves masks as NIfTI on the series' grid.

A case is a folder (walked, sub-folders included) whose files hold one or more series; its id is
the folder's name. Which series is FLAIR, pre- or post-contrast T1 (or T2, for viewing) is
:mod:`dicom_series`' part, from the headers alone; its names are re-exported here.
:mod:`napari_lggseg.cases` chooses between this module and :mod:`scan_io` for a path.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dicom_series import (  # noqa: F401  (re-exported: the DICOM names in one place)
    EXTRA,
    DicomError,
    DicomSupportMissing,
    Series,
    case_of_file,
    choose_series,
    find_dicom_cases,
    is_dicom_case,
    is_dicom_file,
    is_dicom_folder,
    list_series,
    pydicom_or_error,
    sequence_of_series,
)
from .geometry import GridsApartError, Orientation, resample_onto
from .scan_io import (
    FLAIR_SEQ,
    POST,
    PRE,
    T2,
    CaseFiles,
    ScanCase,
    ScanHeader,
    same_grid,
)

_SPACING_TOLERANCE = 0.01  # relative: slice steps this far from the median are uneven


# --------------------------------------------------------------------------- geometry


@dataclass
class SeriesGrid:
    """Where a series' voxels are: files sorted along the slice normal, the NIfTI-style affine
    (voxel (column, row, slice) -> RAS+ mm) and the voxel shape (columns, rows, slices)."""

    files: list[Path]
    headers: list
    affine: np.ndarray
    shape: tuple[int, int, int]


def _vector(ds, tag: str, n: int, where: str) -> np.ndarray:
    value = ds.get(tag)
    try:
        vec = np.asarray([float(v) for v in value], float)
    except (TypeError, ValueError):
        vec = np.empty(0)
    if vec.shape != (n,) or not np.isfinite(vec).all():
        raise DicomError(
            f"{where}: no usable {tag} (position tags are needed to place the slices in space)"
        )
    return vec


def series_grid(folder: Path, s: Series) -> SeriesGrid:
    """The series' geometry from its tags; DicomError (naming the folder and the series) for a
    single 2-D image, multi-frame or colour images, slices that do not form one evenly spaced
    volume (missing, uneven, repeated, tilted differently) or missing position tags."""
    where = f"{folder}: {s.label}"
    first = s.headers[0]
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise DicomError(
            f"{where}: an enhanced multi-frame DICOM, which is not supported; convert it to NIfTI "
            "(e.g. with dcm2niix) and open the NIfTI"
        )
    if int(first.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomError(f"{where}: colour images; a scan must be greyscale")
    if len(s.files) < 2:
        raise DicomError(f"{where}: a single 2-D image; a scan must be a 3-D volume of slices")
    iop = _vector(first, "ImageOrientationPatient", 6, where)
    spacing = _vector(first, "PixelSpacing", 2, where)
    rows, cols = int(first.get("Rows", 0) or 0), int(first.get("Columns", 0) or 0)
    for f, ds in zip(s.files, s.headers):
        same = np.allclose(
            _vector(ds, "ImageOrientationPatient", 6, f"{where}, {f.name}"), iop, atol=1e-4
        )
        same &= np.allclose(
            _vector(ds, "PixelSpacing", 2, f"{where}, {f.name}"), spacing, atol=1e-4
        )
        if not same or (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)) != (
            rows,
            cols,
        ):
            raise DicomError(
                f"{where}: {f.name} has another orientation, pixel spacing or size than "
                f"{s.files[0].name}; the images do not form one volume (a localizer?)"
            )
    row_cos, col_cos = iop[:3], iop[3:]
    normal = np.cross(row_cos, col_cos)
    positions = np.stack(
        [
            _vector(ds, "ImagePositionPatient", 3, f"{where}, {f.name}")
            for f, ds in zip(s.files, s.headers)
        ]
    )
    order = np.argsort(positions @ normal, kind="stable")
    positions = positions[order]
    _check_steps(where, positions @ normal)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * spacing[1]  # along a row: the column index grows
    lps[:3, 1] = col_cos * spacing[0]  # down a column: the row index grows
    lps[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1)
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM LPS -> NIfTI RAS+
    return SeriesGrid(
        [s.files[i] for i in order],
        [s.headers[i] for i in order],
        affine,
        (cols, rows, len(positions)),
    )


def _check_steps(where: str, along: np.ndarray) -> None:
    steps = np.diff(along)
    if (steps < 1e-3).any():
        raise DicomError(
            f"{where}: several images at one slice position (echoes, time points or repeats in "
            "one series); export each as its own series"
        )
    typical = float(np.median(steps))
    off = np.abs(steps - typical) > _SPACING_TOLERANCE * typical
    if not off.any():
        return
    i = int(np.argmax(np.abs(steps - typical)))
    if steps[i] > 1.5 * typical:
        lost = int(round(steps[i] / typical)) - 1
        raise DicomError(
            f"{where}: about {lost} slice(s) missing between positions {along[i]:.2f} and "
            f"{along[i + 1]:.2f} mm (slices {typical:.2f} mm apart elsewhere); copy the whole "
            "series"
        )
    raise DicomError(
        f"{where}: unevenly spaced slices (steps from {steps.min():.2f} to {steps.max():.2f} mm); "
        "a volume needs evenly spaced slices"
    )


# --------------------------------------------------------------------------- pixels


def _pip_names(requirement: str) -> str:
    """pydicom's ``'gdcm - requires gdcm>=3.0.10'`` -> what to pip install (``python-gdcm``)."""
    wanted = requirement.split("requires", 1)[-1]
    names = [re.split(r"[<>=\s]", w.strip())[0] for w in wanted.split(" and ")]
    names = ["python-gdcm" if n == "gdcm" else n for n in names if n and n != "numpy"]
    return " ".join(names)


def _check_decoder(where: str, ds) -> None:
    from pydicom.pixels import get_decoder

    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if uid is None:
        return  # no file meta: pydicom reads it as implicit little endian
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise DicomError(
            f"{where}: transfer syntax {uid} ({uid.name}) cannot be decoded by pydicom"
        ) from None
    if decoder.is_available:
        return
    options = " or ".join(f"pip install {_pip_names(r)}" for r in decoder.missing_dependencies)
    raise DicomError(
        f"{where}: compressed as {uid.name}, which needs a decoder that is not installed: {options}"
    )


def read_series_voxels(folder: Path, grid: SeriesGrid, label: str) -> np.ndarray:
    """The series' voxels ``(column, row, slice)`` float32, RescaleSlope/Intercept applied."""
    pydicom = pydicom_or_error(folder)
    where = f"{folder}: {label}"
    cols, rows, n = grid.shape
    data = np.empty((cols, rows, n), np.float32)
    for k, f in enumerate(grid.files):
        try:
            ds = pydicom.dcmread(f)
            if k == 0:
                _check_decoder(where, ds)
            pixels = ds.pixel_array
        except DicomError:
            raise
        except Exception as exc:  # damaged or truncated pixel data
            raise DicomError(
                f"{where}: cannot read the pixels of {f.name} ({type(exc).__name__}: {exc})"
            ) from exc
        if pixels.shape != (rows, cols):
            raise DicomError(f"{where}: {f.name} holds {pixels.shape} pixels, not {(rows, cols)}")
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        data[:, :, k] = pixels.T.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return data


def reference_image(grid: SeriesGrid, description: str = ""):
    """A pixel-less NIfTI image on the series' grid (the header :mod:`scan_masks` writes masks
    with): the affine as both qform and sform, code 1 (scanner), mm units."""
    import nibabel as nib

    img = nib.Nifti1Image(np.broadcast_to(np.zeros((), np.float32), grid.shape), grid.affine)
    zooms = np.sqrt((grid.affine[:3, :3] ** 2).sum(axis=0))
    rotation = grid.affine[:3, :3] / zooms
    orthogonal = np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-4)
    img.set_qform(grid.affine, code=1 if orthogonal else 0)  # a quaternion cannot hold a shear
    img.set_sform(grid.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = f"DICOM {description}"[:79].encode("ascii", "replace")
    return img


# --------------------------------------------------------------------------- cases


def _case_folder(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_file():
        return case_of_file(path)
    if not path.is_dir():
        raise DicomError(f"{path}: no such file or folder")
    return path


def _chosen_grids(folder: Path, mapping, sequences) -> tuple[dict, dict, list[str]]:
    series = list_series(folder)
    chosen, notes = choose_series(folder, series, mapping)
    unused = [s.label for s in series if s not in chosen.values()]
    if unused:
        notes.append(f"not used: {', '.join(unused)}")
    grids = {seq: series_grid(folder, chosen[seq]) for seq in sequences if seq in chosen}
    return chosen, grids, notes


def read_dicom_header(path: str | os.PathLike, mapping: dict | None = None) -> ScanHeader:
    """A DICOM case's files and the FLAIR's geometry from the headers alone (no pixels read);
    enough for :func:`napari_lggseg.scan_masks.save_mask`."""
    folder = _case_folder(path)
    chosen, grids, _ = _chosen_grids(folder, mapping, (FLAIR_SEQ,))
    return _header(folder, chosen, grids)


def dicom_case_files(path: str | os.PathLike, mapping: dict | None = None) -> CaseFiles:
    """Which series holds which sequence (first file of each), from the headers alone: what
    :func:`scan_io.nifti_case_files` says of a NIfTI case (project worklists list cases with it)."""
    folder = _case_folder(path)
    chosen, _ = choose_series(folder, list_series(folder), mapping)
    return CaseFiles(folder.name, folder, _first_files(chosen))


def _first_files(chosen: dict) -> dict[str, Path]:
    """A file of each chosen series (it maps the series again), FLAIR first."""
    return {seq: chosen[seq].files[0] for seq in (FLAIR_SEQ, PRE, POST, T2) if seq in chosen}


def _header(folder: Path, chosen: dict, grids: dict) -> ScanHeader:
    flair = grids[FLAIR_SEQ]
    ref = reference_image(flair, chosen[FLAIR_SEQ].description)
    files = _first_files(chosen)
    return ScanHeader(folder.name, folder, files, ref, Orientation.of(flair.affine, flair.shape))


_CHANNELS = {PRE: 0, FLAIR_SEQ: 1, POST: 2}


def read_dicom_case(
    path: str | os.PathLike, mapping: dict | None = None, all_sequences: bool = False
) -> ScanCase:
    """Read a DICOM case folder (or the folder of a DICOM file) into a :class:`ScanCase` with
    the channel order, orientation and affine of :func:`scan_io.read_nifti_case`; sequences on
    other grids are resampled onto the FLAIR's. ``mapping`` names series per sequence (see
    :func:`choose_series`); ``all_sequences`` also reads a T2 into ``others``. Raises DicomError
    (a ScanFormatError) naming the folder."""
    folder = _case_folder(path)
    wanted = (FLAIR_SEQ, PRE, POST, T2) if all_sequences else (FLAIR_SEQ, PRE, POST)
    chosen, grids, notes = _chosen_grids(folder, mapping, wanted)
    header = _header(folder, chosen, grids)
    flair = grids[FLAIR_SEQ]
    orientation = header.orientation
    notes.extend(orientation.describe(flair.affine))
    zyx = orientation.to_model(np.empty(flair.shape, np.bool_)).shape
    image = np.empty((*zyx, 3), np.float32)
    others: dict[str, np.ndarray] = {}
    for seq, grid in grids.items():
        data = read_series_voxels(folder, grid, chosen[seq].label)
        if seq != FLAIR_SEQ and (
            grid.shape != flair.shape or not same_grid(grid.affine, flair.affine)
        ):
            try:
                data = resample_onto(data, grid.affine, flair.affine, flair.shape)
            except GridsApartError as exc:
                raise DicomError(
                    f"{folder}: {chosen[seq].label} does not overlap the FLAIR in space ({exc}); "
                    "series of different patients or studies in one folder?"
                ) from None
            notes.append(
                f"{seq} resampled onto the FLAIR's grid through the series' geometry "
                "(no registration)"
            )
        if seq in _CHANNELS:
            image[..., _CHANNELS[seq]] = orientation.to_model(data)
        else:
            others[seq] = np.ascontiguousarray(orientation.to_model(data))
    missing = tuple(seq for seq in (PRE, POST) if seq not in grids)
    for seq in missing:
        image[..., _CHANNELS[seq]] = image[..., 1]  # FLAIR stands in, as in scan_io and the LGG set
    if missing:
        notes.append(f"{' and '.join(missing)} missing: FLAIR stands in for it")
    return ScanCase(
        header.case_id,
        folder,
        header.files,
        header.reference,
        orientation,
        image=image,
        missing_sequences=missing,
        notes=notes,
        others=others,
    )
