"""LGG patient folders and corrections folders <-> numpy arrays. No Qt, no torch.

A patient folder ``P/`` holds ``P_<n>.tif`` slices (H x W x 3 uint8: pre-contrast, FLAIR,
post-contrast) and optionally ``P_<n>_mask.tif`` (H x W uint8, 0/255), ``n`` counting from 1.
A corrections folder holds ``P_<n>_mask.tif`` written by a person (through napari's writer) plus
a JSON sidecar naming the source image folder and the slices the person reviewed, so training
finds the images without copying them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .atomic import staged_folder

SEQUENCES = ("pre-contrast", "FLAIR", "post-contrast")
FLAIR = 1
SIDECAR = "lggseg_corrections.json"
SIDECAR_FORMAT = "napari-lggseg corrections"
_SLICE_RE = re.compile(r"^(?P<pid>.+)_(?P<n>\d+)(?P<mask>_mask)?\.tiff?$", re.IGNORECASE)


class LGGFormatError(ValueError):
    """Input that is LGG-shaped but broken; the message names the file and the problem."""


class LGGWriteError(OSError):
    """A corrections folder could not be written; nothing existing was changed."""


def parse_slice_name(name: str) -> tuple[str, int, bool] | None:
    """``'P_12_mask.tif'`` -> ``('P', 12, True)``; None for other names."""
    m = _SLICE_RE.match(name)
    if m is None:
        return None
    return m["pid"], int(m["n"]), m["mask"] is not None


# --------------------------------------------------------------------------- discovery


def _slice_entries(folder: Path) -> list[tuple[int, bool, Path]]:
    """Slices of the patient named like ``folder`` (its name is the patient id)."""
    out = []
    for entry in os.scandir(folder):
        parsed = parse_slice_name(entry.name)
        if parsed and parsed[0] == folder.name and entry.is_file():
            out.append((parsed[1], parsed[2], Path(entry.path)))
    return out


def is_patient_folder(path: str | os.PathLike) -> bool:
    """Cheap check: a folder holding at least one ``<foldername>_<n>[_mask].tif``. Never raises."""
    try:
        path = Path(path)
        if not path.is_dir():
            return False
        with os.scandir(path) as it:
            for entry in it:
                parsed = parse_slice_name(entry.name)
                if parsed and parsed[0] == path.name:
                    return True
    except OSError:
        return False
    return False


def is_corrections_folder(path: str | os.PathLike) -> bool:
    """A folder with our sidecar. Never raises."""
    try:
        return (Path(path) / SIDECAR).is_file()
    except OSError:
        return False


def list_patients(root: str | os.PathLike) -> list[Path]:
    """Patient folders directly under a ``kaggle_3m``-style root, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise LGGFormatError(f"{root}: not a folder")
    return sorted(p for p in root.iterdir() if is_patient_folder(p))


def is_patient_root(path: str | os.PathLike) -> bool:
    """A folder whose sub-folders include LGG patient folders. Never raises."""
    try:
        path = Path(path)
        return path.is_dir() and any(is_patient_folder(p) for p in path.iterdir() if p.is_dir())
    except OSError:
        return False


@dataclass(frozen=True)
class PatientFiles:
    """The slice files of one patient, in slice order (``_2`` before ``_10``)."""

    patient_id: str
    folder: Path
    slice_numbers: tuple[int, ...]
    image_files: tuple[Path, ...]
    mask_files: tuple[Path, ...] | None


def _check_consecutive(numbers: list[int], folder: Path, pid: str, suffix: str) -> None:
    expected = list(range(1, len(numbers) + 1))
    if numbers != expected:
        missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
        if missing:
            raise LGGFormatError(
                f"{folder / f'{pid}_{missing[0]}{suffix}.tif'}: slice {missing[0]} is missing "
                f"(slices must be numbered 1..N without gaps; found {len(numbers)} up to {max(numbers)})"
            )
        raise LGGFormatError(f"{folder}: slice numbers must start at 1 (found {numbers[:3]}...)")


def find_patient(folder: str | os.PathLike) -> PatientFiles:
    """List and validate the slice files of a patient folder (names only, no pixels read)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LGGFormatError(f"{folder}: patient folder does not exist")
    pid = folder.name
    entries = _slice_entries(folder)
    images = {n: p for n, is_mask, p in entries if not is_mask}
    masks = {n: p for n, is_mask, p in entries if is_mask}
    if not images and not masks:
        raise LGGFormatError(f"{folder}: no slices named {pid}_<n>.tif in this folder")
    if not images:
        first = masks[min(masks)]
        raise LGGFormatError(f"{first}: mask without images (no {pid}_<n>.tif slices in {folder})")
    numbers = sorted(images)
    _check_consecutive(numbers, folder, pid, "")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise LGGFormatError(f"{masks[orphans[0]]}: mask without its image {pid}_{orphans[0]}.tif")
    mask_files = None
    if masks:
        absent = [n for n in numbers if n not in masks]
        if absent:
            raise LGGFormatError(
                f"{folder / f'{pid}_{absent[0]}_mask.tif'}: mask missing while other slices have masks"
            )
        mask_files = tuple(masks[n] for n in numbers)
    return PatientFiles(pid, folder, tuple(numbers), tuple(images[n] for n in numbers), mask_files)


# --------------------------------------------------------------------------- reading


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        return tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for damaged files
        raise LGGFormatError(
            f"{path}: cannot read this TIFF ({type(exc).__name__}: {exc})"
        ) from exc


def _read_image_slice(path: Path) -> np.ndarray:
    arr = _read_tiff(path)
    if arr.dtype != np.uint8:
        raise LGGFormatError(f"{path}: expected 8-bit pixels (uint8), found {arr.dtype}")
    if arr.ndim != 3 or arr.shape[-1] != 3:
        kind = "grayscale" if arr.ndim == 2 else f"shape {arr.shape}"
        raise LGGFormatError(
            f"{path}: expected a 3-channel slice (pre-contrast, FLAIR, post-contrast), found {kind}"
        )
    return arr


def _read_mask_slice(path: Path) -> np.ndarray:
    arr = _read_tiff(path)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and (arr == arr[..., :1]).all():
        arr = arr[..., 0]  # some tools save grey masks as RGB
    if arr.ndim != 2:
        raise LGGFormatError(f"{path}: expected a 2-D mask, found shape {arr.shape}")
    values = np.unique(arr)
    if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
        raise LGGFormatError(
            f"{path}: mask is not binary (expected 0 and 255, found values {values[:6].tolist()}"
            f"{'...' if len(values) > 6 else ''})"
        )
    return (arr > 0).astype(np.uint8)


def _stack(slices: list[np.ndarray], files: tuple[Path, ...], what: str) -> np.ndarray:
    shape = slices[0].shape
    for arr, path in zip(slices, files):
        if arr.shape != shape:
            raise LGGFormatError(
                f"{path}: {what} shape {arr.shape} differs from {files[0].name} {shape}"
            )
    return np.stack(slices)


@dataclass
class Patient:
    """One patient's volume (Z, H, W, 3) uint8 and mask (Z, H, W) uint8 0/1 or None."""

    patient_id: str
    folder: Path
    image: np.ndarray
    mask: np.ndarray | None
    slice_files: tuple[str, ...] = ()

    @property
    def institution(self) -> str:
        return institution_of(self.patient_id)


def institution_of(patient_id: str) -> str:
    """``TCGA_CS_4941_19960909`` -> ``CS``; other ids give ``''``."""
    parts = patient_id.split("_")
    return parts[1] if len(parts) > 2 and parts[0] == "TCGA" else ""


def read_patient(folder: str | os.PathLike, masks: bool = True) -> Patient:
    """Read a patient folder; raises LGGFormatError naming the first bad file."""
    files = find_patient(folder)
    image = _stack([_read_image_slice(p) for p in files.image_files], files.image_files, "slice")
    mask = None
    if masks and files.mask_files:
        mask = _stack([_read_mask_slice(p) for p in files.mask_files], files.mask_files, "mask")
        if mask.shape != image.shape[:3]:
            raise LGGFormatError(
                f"{files.mask_files[0]}: mask shape {mask.shape[1:]} does not match its slices "
                f"{image.shape[1:3]}"
            )
    return Patient(
        files.patient_id, files.folder, image, mask, tuple(p.name for p in files.image_files)
    )


def missing_sequences(image: np.ndarray) -> tuple[str, ...]:
    """Sequences that are not really there: a channel identical to FLAIR (the dataset's
    convention for a missing scan) or blank. ``image`` is (..., 3) or FLAIR-only (..., 1)/(Z,H,W).
    """
    if image.ndim == 3 or image.shape[-1] == 1:
        return (SEQUENCES[0], SEQUENCES[2])
    flair = image[..., FLAIR]
    out = []
    for c in (0, 2):
        ch = image[..., c]
        if not ch.any() or np.array_equal(ch, flair):
            out.append(SEQUENCES[c])
    return tuple(out)


def describe_sequences(missing: tuple[str, ...]) -> str:
    """Words for the GUI and CSV: 'all sequences present' or 'pre- and post-contrast missing...'."""
    if not missing:
        return "all sequences present"
    if len(missing) == 2:
        return "pre- and post-contrast missing: using FLAIR only"
    return f"{missing[0]} missing: FLAIR stands in for it"


# --------------------------------------------------------------------------- corrections


@dataclass
class Corrections:
    """A corrected mask with what the sidecar records about it."""

    patient_id: str
    folder: Path
    source_folder: Path
    mask: np.ndarray
    reviewed_slices: list[int]  # 0-based indices into the volume
    model: str | None = None
    created: str = ""
    whole_volume_reviewed: bool = False
    extra: dict = field(default_factory=dict)


def saved_work(folder: str | os.PathLike) -> str | None:
    """What a person's work in a corrections folder amounts to ("2 reviewed slices", ...), or None
    when there is none to lose: no corrections there, or an unreviewed, unedited prediction.
    Anything unclear counts as work. Never raises."""
    folder = Path(folder)
    if not is_corrections_folder(folder):
        return None
    sidecar = folder / SIDECAR
    try:
        meta = json.loads(sidecar.read_text())
        saved_at = sidecar.stat().st_mtime
        masks = [p for p in folder.iterdir() if (parsed := parse_slice_name(p.name)) and parsed[2]]
        edited = any(p.stat().st_mtime > saved_at + 1.0 for p in masks)
    except (OSError, ValueError):
        return "corrections whose sidecar cannot be read"
    return work_in_sidecar(meta, edited, "a prediction whose masks were edited after it was saved")


def work_in_sidecar(meta, edited: bool, edited_note: str) -> str | None:
    """What a saved mask's sidecar says of a person's work (LGG corrections and NIfTI masks share
    its fields), or None for an unreviewed prediction nobody edited (``edited_note`` if edited)."""
    if not isinstance(meta, dict):
        return "corrections whose sidecar cannot be read"
    reviewed = meta.get("reviewed_slices") or []
    if meta.get("whole_volume_reviewed"):
        return "corrections of the whole volume"
    if reviewed:
        return f"corrections ({len(reviewed)} reviewed slice{'s' if len(reviewed) != 1 else ''})"
    if meta.get("kind") != "prediction":
        return "saved corrections"
    return edited_note if edited else None


def _check_writable_target(out: Path, source_folder: Path, patient_id: str) -> None:
    if out.resolve() == source_folder.resolve() or (
        out.is_dir()
        and is_patient_folder(out)
        and any(not parse_slice_name(p.name)[2] for p in out.iterdir() if parse_slice_name(p.name))
    ):
        raise LGGWriteError(
            f"{out}: this folder holds patient images; corrections go to a folder of their own "
            "so the dataset's expert masks are never overwritten"
        )
    if out.exists() and not out.is_dir():
        raise LGGWriteError(f"{out}: exists and is not a folder; corrections are saved as a folder")
    if out.is_dir() and any(out.iterdir()):
        if not is_corrections_folder(out):
            raise LGGWriteError(
                f"{out}: this folder already holds other files; save corrections to a new or "
                "empty folder (or over earlier corrections of the same patient)"
            )
        try:
            other = json.loads((out / SIDECAR).read_text()).get("patient_id")
        except (OSError, ValueError, AttributeError):
            other = None
        if other != patient_id:
            raise LGGWriteError(
                f"{out / SIDECAR}: these are corrections of {other or 'an unknown patient'}, "
                f"not {patient_id}; choose another folder"
            )


def _source_of(source_folder: Path, patient_id: str, mask_shape: tuple) -> PatientFiles:
    """The patient's image files, after checking that a mask of ``mask_shape`` is theirs."""
    import tifffile

    try:
        files = find_patient(source_folder)
    except LGGFormatError as exc:
        raise LGGFormatError(f"cannot save corrections for {patient_id}: {exc}") from exc
    if files.patient_id != patient_id:
        raise LGGFormatError(f"{source_folder}: holds patient {files.patient_id}, not {patient_id}")
    with tifffile.TiffFile(files.image_files[0]) as tf:
        hw = tuple(tf.pages[0].shape[:2])
    expected = (len(files.image_files), *hw)
    if tuple(mask_shape) != expected:
        raise LGGFormatError(
            f"mask for {patient_id} has shape {tuple(mask_shape)}, but {source_folder} has "
            f"{expected[0]} slices of {hw[0]}x{hw[1]}: refusing to save a mask of another patient"
        )
    return files


def write_corrections(
    out_folder: str | os.PathLike,
    mask: np.ndarray,
    patient_id: str,
    source_folder: str | os.PathLike,
    reviewed_slices=(),
    model: str | None = None,
    whole_volume_reviewed: bool = False,
    extra: dict | None = None,
) -> Path:
    """Write ``mask`` (Z, H, W; >0 is tumour) as a corrections folder; returns the sidecar path.

    Refuses a mask whose shape does not match the patient's slices, any folder holding images,
    and an existing folder that is neither empty nor earlier corrections of the same patient.
    Every file is staged in a temporary folder beside ``out_folder``, which is then renamed into
    place (earlier corrections are swapped out whole), so a failure leaves existing files as they were.
    """
    import tifffile

    out = Path(out_folder)
    source_folder = Path(source_folder)
    mask = np.asarray(mask)
    files = _source_of(source_folder, patient_id, mask.shape)
    expected = mask.shape
    _check_writable_target(out, source_folder, patient_id)
    reviewed = sorted({int(i) for i in reviewed_slices})
    if any(i < 0 or i >= expected[0] for i in reviewed):
        raise ValueError(f"reviewed slice indices {reviewed} outside 0..{expected[0] - 1}")
    sidecar = {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "patient_id": patient_id,
        "source_folder": str(source_folder.resolve()),
        "shape": list(expected),
        "reviewed_slices": reviewed,
        "reviewed_slice_files": [files.image_files[i].name for i in reviewed],
        "whole_volume_reviewed": bool(whole_volume_reviewed),
        "model": model,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    binary = (mask > 0).astype(np.uint8) * 255
    names = [f"{patient_id}_{n}_mask.tif" for n in files.slice_numbers]
    try:
        # staged beside ``out`` and renamed into place; earlier corrections are swapped out whole
        # (and put back on failure), so a reader never sees a mix of old and new masks
        with staged_folder(out, replace=True) as staging:
            for name, sl in zip(names, binary):
                tifffile.imwrite(staging / name, sl, compression="zlib")
            (staging / SIDECAR).write_text(json.dumps(sidecar, indent=2))
    except OSError as exc:
        raise LGGWriteError(
            f"{out}: cannot write corrections here ({exc.strerror or exc})"
        ) from exc
    return out / SIDECAR


def read_corrections(folder: str | os.PathLike) -> Corrections:
    """Read a corrections folder written by :func:`write_corrections`."""
    folder = Path(folder)
    sidecar_path = folder / SIDECAR
    try:
        meta = json.loads(sidecar_path.read_text())
    except FileNotFoundError:
        raise LGGFormatError(f"{sidecar_path}: no corrections sidecar in this folder") from None
    except (OSError, ValueError) as exc:
        raise LGGFormatError(f"{sidecar_path}: cannot read the sidecar ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise LGGFormatError(f"{sidecar_path}: not a napari-lggseg corrections sidecar")
    pid = meta.get("patient_id")
    if not pid or not meta.get("source_folder"):
        raise LGGFormatError(f"{sidecar_path}: the sidecar lacks 'patient_id' or 'source_folder'")
    source = Path(meta["source_folder"])
    if not source.is_dir():
        raise LGGFormatError(
            f"{sidecar_path}: its source image folder {source} does not exist "
            "(moved or deleted?); edit 'source_folder' in the sidecar to point at the patient's images"
        )
    entries = {}
    for entry in folder.iterdir():
        parsed = parse_slice_name(entry.name)
        if parsed and parsed[0] == pid and parsed[2]:
            entries[parsed[1]] = entry
    numbers = sorted(entries)
    z = int(meta.get("shape", [len(numbers)])[0])
    if numbers != list(range(1, z + 1)):
        missing = sorted(set(range(1, z + 1)) - set(numbers))
        name = f"{pid}_{missing[0]}_mask.tif" if missing else folder.name
        raise LGGFormatError(
            f"{folder / name}: corrections folder should hold {z} masks, found {len(numbers)}"
        )
    mask = _stack(
        [_read_mask_slice(entries[n]) for n in numbers], tuple(entries[n] for n in numbers), "mask"
    )
    known = {
        "format",
        "version",
        "patient_id",
        "source_folder",
        "shape",
        "reviewed_slices",
        "reviewed_slice_files",
        "whole_volume_reviewed",
        "model",
        "created",
    }
    return Corrections(
        patient_id=pid,
        folder=folder,
        source_folder=source,
        mask=mask,
        reviewed_slices=[int(i) for i in meta.get("reviewed_slices", [])],
        model=meta.get("model"),
        created=meta.get("created", ""),
        whole_volume_reviewed=bool(meta.get("whole_volume_reviewed", False)),
        extra={k: v for k, v in meta.items() if k not in known},
    )
