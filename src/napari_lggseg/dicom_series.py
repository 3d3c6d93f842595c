"""DICOM folders before any pixel is read: which files are DICOM, which cases a folder holds,
its series (grouped by SeriesInstanceUID) and which one is FLAIR, pre- or post-contrast T1 or T2,
from the series description / protocol name and ContrastBolusAgent, or as the person maps them.
No Qt, no torch; pydicom (the optional extra ``dicom``) only for reading headers: telling a
folder holds DICOM needs none. :mod:`dicom_io` reads the chosen series into a case.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .scan_io import FLAIR_SEQ, POST, PRE, T2, ScanFormatError, is_case_folder, is_nifti_name

EXTRA = 'pip install "napari-lggseg[dicom]"'
_MAX_DEPTH = 4  # folder levels walked below a case folder (study/series/... layouts)
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


def pydicom_or_error(folder: Path):
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
    """What :mod:`cases` hands to :mod:`dicom_io`: a DICOM file, or a folder with DICOM files that
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
    pydicom = pydicom_or_error(folder)
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
