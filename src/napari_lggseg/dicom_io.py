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
the folder's name. FLAIR, pre- and post-contrast T1 (and T2, for viewing) are told from the
series description / protocol name and ContrastBolusAgent, or mapped by the person.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .geometry import GridsApartError, Orientation, resample_onto
from .scan_io import (
    FLAIR_SEQ,
    POST,
    PRE,
    T2,
    CaseFiles,
    ScanCase,
    ScanFormatError,
    ScanHeader,
    is_case_folder,
    is_nifti_name,
    same_grid,
)

EXTRA = 'pip install "napari-lggseg[dicom]"'
_MAX_DEPTH = 4  # folder levels walked below a case folder (study/series/... layouts)
_SPACING_TOLERANCE = 0.01  # relative: slice steps this far from the median are uneven
_HEADER_TAGS = [
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesDescription",
    "ProtocolName",
    "SeriesNumber",
    "ContrastBolusAgent",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
]
# what a series description / protocol name says, by word (lower case; split at _ - . spaces)
_FLAIR_WORDS = {"flair", "t2f", "t2flair", "tirm", "darkfluid", "dark-fluid"}
_POST_WORDS = {"post", "gd", "gad", "gado", "ce", "c+", "+c", "t1c", "t1ce", "t1gd", "t1post"}
_POST_WORDS |= {"t1+c", "+gd", "contrast", "postcontrast", "mdc", "kontrast"}
_T1_WORDS = {"t1", "t1w", "t1n", "mprage", "spgr", "bravo", "t1pre", "t1se", "t1tse", "t1fs"}
_T2_WORDS = {"t2", "t2w", "t2tse", "t2se", "t2fse"}
_SKIP_WORDS = {"localizer", "localiser", "scout", "survey", "loc", "3plane", "adc", "dwi", "trace"}
_SEQ_KEYS = {
    **dict.fromkeys(("flair", "t2f", FLAIR_SEQ.lower()), FLAIR_SEQ),
    **dict.fromkeys(("pre", "t1", "t1n", PRE), PRE),
    **dict.fromkeys(("post", "t1c", "t1ce", "t1gd", POST), POST),
    **dict.fromkeys(("t2", "t2w"), T2),
}


class DicomError(ScanFormatError):
    """A DICOM folder that cannot be read as a case; the message names the folder."""


class DicomSupportMissing(DicomError):
    """pydicom (the ``dicom`` extra) is not installed."""


def _pydicom(folder: Path):
    try:
        import pydicom
    except ImportError:
        raise DicomSupportMissing(
            f"{folder}: holds DICOM files; reading DICOM needs pydicom: {EXTRA}"
        ) from None
    return pydicom


# --------------------------------------------------------------------------- finding


def is_dicom_file(path: str | os.PathLike) -> bool:
    """A DICOM Part-10 file (``DICM`` after the 128-byte preamble). Never raises."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _walk(folder: Path, max_depth: int = _MAX_DEPTH):
    """(folder, file names) under ``folder``, sorted, hidden ones and DICOMDIR left out."""
    for root, dirs, names in os.walk(folder):
        depth = len(Path(root).relative_to(folder).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < max_depth else []
        yield Path(root), [n for n in sorted(names) if n[0] != "." and n.upper() != "DICOMDIR"]


def _walk_files(folder: Path):
    for root, names in _walk(folder):
        yield from (root / n for n in names)


def is_dicom_folder(path: str | os.PathLike, probe: int = 20, max_folders: int = 200) -> bool:
    """A DICOM file, or a folder with DICOM files in it or its sub-folders (the first ``probe``
    files of the first ``max_folders`` folders are looked at). Cheap, needs no pydicom, never
    raises: the reader calls it to decide whether to claim a path."""
    try:
        path = Path(path)
        if path.is_file():
            return is_dicom_file(path)
        if not path.is_dir():
            return False
        for n, (root, names) in enumerate(_walk(path)):
            if n >= max_folders:
                return False
            if any(is_dicom_file(root / name) for name in names[:probe]):
                return True
        return False
    except (OSError, TypeError, ValueError):
        return False


def is_dicom_case(path: str | os.PathLike) -> bool:
    """What :mod:`scan_io` hands to this module: a DICOM file, or a folder with DICOM files that
    is not a NIfTI case folder (NIfTI files directly in it win). Never raises."""
    try:
        path = Path(path)
        if path.is_file():
            return not is_nifti_name(path.name) and is_dicom_file(path)
        return not is_case_folder(path) and is_dicom_folder(path)
    except (OSError, TypeError, ValueError):
        return False


def find_dicom_cases(path: str | os.PathLike) -> list[Path]:
    """The DICOM cases at ``path``: ``[path]`` for a folder holding one study (or DICOM files
    directly), its sub-folders holding DICOM for a folder of several studies, the case a DICOM
    file belongs to (:func:`case_of_file`), ``[]`` otherwise. Reads one header per folder; never raises."""
    try:
        path = Path(path)
        if path.is_file():
            return [case_of_file(path)] if is_dicom_file(path) else []
        if not is_dicom_folder(path):
            return []
        if any(is_dicom_file(e.path) for e in os.scandir(path) if e.is_file()):
            return [path]
        children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        children = [p for p in children if is_dicom_folder(p)]
        studies = {_study_of(p) for p in children}
        return [path] if len(studies) <= 1 or None in studies else children
    except (OSError, TypeError, ValueError):
        return []


def case_of_file(path: Path) -> Path:
    """The case a DICOM file opens: its folder, or the study folder above it when the file's
    folder is one series beside others of the same study (``study/<series>/<files>``)."""
    folder = path.parent
    study = _study_of_file(path)
    parent = folder.parent
    if (
        study is None
        or parent == folder
        or any(is_dicom_file(e.path) for e in os.scandir(parent) if e.is_file())
    ):
        return folder
    siblings = [p for p in parent.iterdir() if p.is_dir() and p != folder and p.name[0] != "."]
    return parent if any(_study_of(p) == study for p in siblings) else folder


def _study_of_file(path: Path) -> str | None:
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        return str(ds.get("StudyInstanceUID", "")) or None
    except Exception:  # no pydicom, damaged header: no study to go by
        return None


def _study_of(folder: Path) -> str | None:
    dicom = (f for f in _walk_files(folder) if is_dicom_file(f))
    first = next(dicom, None)
    return None if first is None else _study_of_file(first)


# --------------------------------------------------------------------------- series


@dataclass
class Series:
    """One DICOM series of a case folder, from its headers (no pixels)."""

    uid: str
    description: str
    protocol: str
    number: str
    files: list[Path]
    headers: list  # pydicom Datasets without pixel data, same order as files
    contrast_agent: str = ""

    @property
    def label(self) -> str:
        name = self.description or self.protocol or "no description"
        return f"series {self.number or '?'} '{name}' ({len(self.files)} images)"


def list_series(folder: str | os.PathLike) -> list[Series]:
    """The series in ``folder`` (walked), grouped by SeriesInstanceUID, by series number."""
    folder = Path(folder)
    pydicom = _pydicom(folder)
    groups: dict[str, Series] = {}
    for f in _walk_files(folder):
        if not is_dicom_file(f):
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except Exception as exc:  # damaged header
            raise DicomError(f"{folder}: cannot read {f} ({type(exc).__name__}: {exc})") from exc
        uid = str(ds.get("SeriesInstanceUID", "")) or f"(no series uid) {f.parent}"
        if uid not in groups:
            groups[uid] = Series(
                uid,
                str(ds.get("SeriesDescription", "") or "").strip(),
                str(ds.get("ProtocolName", "") or "").strip(),
                str(ds.get("SeriesNumber", "") or ""),
                [],
                [],
                str(ds.get("ContrastBolusAgent", "") or "").strip(),
            )
        groups[uid].files.append(f)
        groups[uid].headers.append(ds)
    if not groups:
        raise DicomError(f"{folder}: no DICOM files in this folder")
    return sorted(groups.values(), key=lambda s: (_number(s.number), s.uid))


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def sequence_of_series(description: str, contrast_agent: str = "") -> str | None:
    """The sequence a series description / protocol name says (``'AX T2 FLAIR'`` -> FLAIR,
    ``'T1 POST GD'`` or a ContrastBolusAgent -> post-contrast, ``'t1_mprage'`` -> pre-contrast),
    or None (localizers, diffusion, unknown names)."""
    low = description.lower()
    words = {w for w in re.split(r"[_\-.\s/()]+", low) if w}
    if words & _SKIP_WORDS:
        return None
    if "flair" in low or words & _FLAIR_WORDS:
        return FLAIR_SEQ
    t1 = bool(words & _T1_WORDS) or "mprage" in low or re.search(r"\bt1", low) is not None
    post = bool(words & _POST_WORDS) or "+c" in low or "+gd" in low or "post" in low
    if t1 and (post or contrast_agent):
        return POST
    if t1:
        return PRE
    if words & _T2_WORDS:
        return T2
    return None


def _series_sequence(s: Series) -> str | None:
    return sequence_of_series(f"{s.description} {s.protocol}", s.contrast_agent)


def _matches(s: Series, value) -> bool:
    if isinstance(value, os.PathLike) or (isinstance(value, str) and os.sep in value):
        target = Path(value).resolve()
        return any(f.resolve() == target or target in f.resolve().parents for f in s.files)
    text = str(value).strip().lower()
    return text in {s.uid.lower(), s.description.lower(), s.protocol.lower(), s.number.lower()}


def _sequence_key(key: str, folder: Path) -> str:
    seq = _SEQ_KEYS.get(str(key).strip().lower(), _SEQ_KEYS.get(str(key)))
    if seq is None:
        raise DicomError(
            f"{folder}: mapping key {key!r} names no sequence; use 'flair', 'pre', 'post' or 't2'"
        )
    return seq


def choose_series(
    folder: Path, series: list[Series], mapping: dict | None = None
) -> tuple[dict[str, Series], list[str]]:
    """Which series is which sequence: ``mapping`` first (sequence -> series description,
    protocol name, series number, SeriesInstanceUID, or a path to one of its files), then the
    names. Several candidates for a sequence: the one with most images, said in the notes.
    DicomError when no series is the FLAIR."""
    chosen: dict[str, Series] = {}
    notes: list[str] = []
    for key, value in (mapping or {}).items():
        seq = _sequence_key(key, folder)
        hits = [s for s in series if _matches(s, value)]
        if len(hits) != 1:
            have = "; ".join(s.label + f" uid {s.uid}" for s in series)
            what = "no series" if not hits else f"{len(hits)} series"
            raise DicomError(
                f"{folder}: {what} match {value!r} for {seq} (map by SeriesInstanceUID or series "
                f"number when descriptions repeat); the series here: {have}"
            )
        chosen[seq] = hits[0]
    taken = {id(s) for s in chosen.values()}
    for seq in (FLAIR_SEQ, PRE, POST, T2):
        if seq in chosen:
            continue
        candidates = [s for s in series if id(s) not in taken and _series_sequence(s) == seq]
        if not candidates:
            continue
        best = max(candidates, key=lambda s: len(s.files))
        chosen[seq] = best
        taken.add(id(best))
        if len(candidates) > 1:
            others = ", ".join(s.label for s in candidates if s is not best)
            notes.append(
                f"{seq}: took {best.label} (the most images) over {others}; pass a mapping to "
                "choose another"
            )
    if FLAIR_SEQ not in chosen:
        have = "; ".join(s.label for s in series)
        raise DicomError(
            f"{folder}: no series here says it is a FLAIR (series: {have}); name the FLAIR "
            "series with mapping={'flair': '<series description, number or uid>'}"
        )
    for seq, s in chosen.items():
        notes.append(f"{seq} from {s.label}")
    return chosen, notes


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
    pydicom = _pydicom(folder)
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
    :func:`scan_io.case_files` says of a NIfTI case (project worklists list cases with it)."""
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
    the channel order, orientation and affine of :func:`scan_io.read_case`; sequences on other
    grids are resampled onto the FLAIR's. ``mapping`` names series per sequence (see
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
