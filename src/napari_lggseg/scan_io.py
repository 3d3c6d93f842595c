"""NIfTI scan cases <-> arrays with their geometry, and masks saved back on the scan's own grid.
No Qt, no torch (nibabel, scipy).

A *case* is one patient's scan: a case folder holding one file per sequence (BraTS 2018-2021
``<case>_flair.nii.gz``, ``_t1``, ``_t1ce``, ``_t2``, ``_seg``; BraTS 2023+ ``-t2f``, ``-t1n``,
``-t1c``, ``-t2w``, ``-seg``; or plain words: FLAIR, T1, T1c/T1ce/T1Gd/post, T2,
seg/mask/label), or a single file (the FLAIR unless named otherwise). FLAIR is required; a missing
pre- or post-contrast T1 is replaced by the FLAIR, as the LGG set did and the models learnt.

:func:`read_nifti_case` returns a :class:`ScanCase` whose arrays are in the model orientation of
:mod:`geometry` -- ``(Z, Y, X)``: axial slices from foot to head, front at the top of each slice,
patient's right on the left -- obtained from the file's voxels by axis permutations and flips
only (no interpolation). Other sequences are resampled onto the FLAIR's grid through their
affines when their grids differ. :func:`napari_lggseg.scan_masks.save_mask` maps a mask back to
the FLAIR's voxel order and writes it with the FLAIR's exact header geometry.

NIfTI only: :mod:`napari_lggseg.cases` chooses between this module and :mod:`dicom_io` (which
builds this module's :class:`ScanCase` from DICOM), so this module imports no DICOM code.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .geometry import GridsApartError, Orientation, resample_onto, spacing_of

SUFFIXES = (".nii.gz", ".nii")
PRE, FLAIR_SEQ, POST, T2, LABEL = "pre-contrast", "FLAIR", "post-contrast", "T2", "label"
# file-name words (lower case, split at _ - . and spaces) -> sequence; checked from the name's end
_WORDS = {
    **dict.fromkeys(("flair", "t2f", "t2flair", "fl"), FLAIR_SEQ),
    **dict.fromkeys(("t1", "t1n", "t1w", "t1pre", "pre", "t1native", "mprage"), PRE),
    **dict.fromkeys(
        ("t1ce", "t1c", "t1gd", "t1post", "post", "gd", "ce", "t1wce", "t1contrast"), POST
    ),
    **dict.fromkeys(("t2", "t2w"), T2),
    **dict.fromkeys(("seg", "mask", "label", "labels", "segmentation", "gt"), LABEL),
}
MASK_SUFFIX = "_mask.nii.gz"  # what save_mask writes, with a sidecar of the same stem
MASK_SIDECAR_SUFFIX = "_mask.json"
LARGE_VOXELS = 40_000_000  # per sequence (160 MB as float32): warn before reading


class ScanFormatError(ValueError):
    """A scan that cannot be used; the message names the file and the problem."""


class ScanWriteError(OSError):
    """A mask could not be saved there; nothing existing was changed."""


class LargeScanWarning(UserWarning):
    """Said before reading a volume so large that reading it takes long and much memory."""


# --------------------------------------------------------------------------- names, discovery


def is_nifti_name(name: str) -> bool:
    low = name.lower()
    return low.endswith(SUFFIXES) and not low.startswith(".")


def _stem(name: str) -> str:
    low = name.lower()
    for suffix in SUFFIXES:
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


def sequence_of(name: str) -> str | None:
    """The sequence a file name says (``'Brats18_x_t1ce.nii.gz'`` -> ``'post-contrast'``), or
    None when the name says none of them."""
    tokens = [t for t in re.split(r"[_\-.\s]+", _stem(name).lower()) if t]
    for token in reversed(tokens):
        if token in _WORDS:
            return _WORDS[token]
    return None


def nifti_files(folder: Path) -> list[Path]:
    """The NIfTI files directly in ``folder``, sorted."""
    return sorted(Path(e.path) for e in os.scandir(folder) if is_nifti_name(e.name) and e.is_file())


def is_mask_folder(path: str | os.PathLike) -> bool:
    """A folder holding masks saved by :func:`save_mask` (a ``*_mask.json`` sidecar). Never raises."""
    try:
        return Path(path).is_dir() and any(
            e.name.endswith(MASK_SIDECAR_SUFFIX) for e in os.scandir(path)
        )
    except OSError:
        return False


def is_case_folder(path: str | os.PathLike) -> bool:
    """A folder holding NIfTI files directly (saved-mask folders excluded). Never raises."""
    try:
        path = Path(path)
        return path.is_dir() and not is_mask_folder(path) and bool(nifti_files(path))
    except OSError:
        return False


def find_nifti_cases(path) -> list[Path]:
    """The NIfTI cases at ``path``: ``[path]`` for a NIfTI file or a case folder, the case
    folders (sorted by name) for a folder of them, ``[]`` for anything else. Never raises:
    :func:`napari_lggseg.cases.find_cases` asks it before looking for DICOM."""
    try:
        path = Path(path)
        if path.is_file():
            return [path] if is_nifti_name(path.name) else []
        if not path.is_dir():
            return []
        if is_case_folder(path):
            return [path]
        return sorted(p for p in path.iterdir() if p.is_dir() and is_case_folder(p))
    except (OSError, TypeError, ValueError):
        return []


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case by sequence, found from their names (no pixels read)."""

    case_id: str
    folder: Path
    files: dict[str, Path]  # sequence (PRE, FLAIR_SEQ, POST, T2, LABEL) -> file
    ignored: tuple[Path, ...] = ()


def nifti_case_files(path: str | os.PathLike) -> CaseFiles:
    """Which NIfTI file holds which sequence. A file inside a case folder opens that case; a
    file on its own is the FLAIR unless its name says otherwise."""
    path = Path(path)
    if path.is_file():
        seq = sequence_of(path.name)
        whole = _folder_case_of(path) if seq == FLAIR_SEQ else None
        if whole is not None:
            return whole
        if seq in (None, FLAIR_SEQ):
            return CaseFiles(_case_id_of_file(path), path.parent, {FLAIR_SEQ: path})
        path = path.parent  # a T1, label... of a case folder: the whole case
    if not path.is_dir():
        raise ScanFormatError(f"{path}: no such file or folder")
    found: dict[str, Path] = {}
    ignored = []
    unnamed = []
    for f in nifti_files(path):
        seq = sequence_of(f.name)
        if seq is None:
            unnamed.append(f)
        elif seq in found:
            raise ScanFormatError(
                f"{f}: a second {seq} file in {path} (also {found[seq].name}); keep one "
                "file per sequence (one case per folder)"
            )
        else:
            found[seq] = f
    if FLAIR_SEQ not in found and len(unnamed) == 1 and not found.keys() - {LABEL}:
        found[FLAIR_SEQ] = unnamed.pop()  # one unnamed scan (and maybe a label): the FLAIR
    ignored.extend(unnamed)
    if FLAIR_SEQ not in found:
        have = ", ".join(f"{f.name} ({s})" for s, f in found.items()) or "no NIfTI files"
        raise ScanFormatError(
            f"{path}: no FLAIR scan in this folder (found {have}); the FLAIR is required: name it "
            "<case>_flair.nii.gz"
        )
    return CaseFiles(path.name, path, found, tuple(ignored))


def _folder_case_of(flair: Path) -> CaseFiles | None:
    """The case folder a FLAIR file belongs to, when its folder holds more of that case."""
    try:
        found = nifti_case_files(flair.parent)
    except ScanFormatError:
        return None
    return found if found.files.get(FLAIR_SEQ) == flair and len(found.files) > 1 else None


def _case_id_of_file(path: Path) -> str:
    if _stem(path.name).lower() in _WORDS:  # 'flair.nii.gz': the folder names the case
        return path.parent.name
    tokens = re.split(r"([_\-.\s]+)", _stem(path.name))
    if len(tokens) >= 3 and tokens[-1].lower() in _WORDS:
        return "".join(tokens[:-2]) or _stem(path.name)
    return _stem(path.name)


# --------------------------------------------------------------------------- reading


@dataclass
class ScanHeader:
    """Where a case's voxels are, without its pixels: enough to save a mask on its grid.

    ``reference`` is the FLAIR's nibabel image (header and affine; its pixels are not kept);
    ``orientation.to_file`` turns a model-orientation (Z, Y, X) array into the FLAIR's voxel order.
    """

    case_id: str
    source: Path  # what was opened: the case folder or the single file
    files: dict[str, Path]  # sequence -> file
    reference: object  # nibabel.Nifti1Image / Nifti2Image of the FLAIR
    orientation: Orientation

    @property
    def affine(self) -> np.ndarray:
        """The FLAIR file's affine: its voxel (i, j, k) -> RAS+ mm."""
        return np.asarray(self.reference.affine, float)

    @property
    def model_affine(self) -> np.ndarray:
        """This case's arrays' affine: index (z, y, x) -> RAS+ mm."""
        return self.orientation.model_affine(self.affine)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along (Z, Y, X) of the arrays."""
        return tuple(float(s) for s in spacing_of(self.model_affine)[:3])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(Z, Y, X) of the case's arrays."""
        start = self.orientation.transform[:, 0].astype(int)
        xyz = [0, 0, 0]
        for axis, dest in enumerate(start):
            xyz[dest] = self.orientation.file_shape[axis]
        return (xyz[2], xyz[1], xyz[0])


@dataclass
class ScanCase(ScanHeader):
    """One case in the model orientation (see the module docstring).

    ``image`` (Z, Y, X, 3) float32 holds pre-contrast, FLAIR, post-contrast (intensities as in
    the files, ``scl_slope``/``scl_inter`` applied); a missing one is a copy of FLAIR.
    """

    image: np.ndarray = None
    missing_sequences: tuple[str, ...] = ()
    label: np.ndarray | None = None  # (Z, Y, X) uint8 0/1: any label > 0
    notes: list[str] = field(default_factory=list)  # what was done to the files, for the user
    others: dict[str, np.ndarray] = field(default_factory=dict)  # T2 etc., for viewing only


def read_nifti_header(path: str | os.PathLike) -> ScanHeader:
    """A NIfTI case's files and geometry from the FLAIR's header alone (no pixels read)."""
    found = nifti_case_files(path)
    ref = load_nifti(found.files[FLAIR_SEQ])
    shape = volume_shape(ref, found.files[FLAIR_SEQ])
    return ScanHeader(
        found.case_id, Path(path), dict(found.files), ref, Orientation.of(ref.affine, shape)
    )


def load_nifti(path: Path):
    """nibabel's image (header and a proxy of the voxels); ScanFormatError if it is not NIfTI."""
    import nibabel as nib

    try:
        img = nib.load(path)
    except FileNotFoundError:
        raise ScanFormatError(f"{path}: file not found") from None
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib errors...
        raise ScanFormatError(
            f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ScanFormatError(f"{path}: a {type(img).__name__}, not a NIfTI image")
    return img


def volume_shape(img, path: Path, placed: bool = True) -> tuple[int, int, int]:
    """The 3-D shape of a NIfTI image; ScanFormatError for 2-D, 4-D, empty, or (``placed``)
    a header that cannot place the voxels in space."""
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]  # a singleton 4th (5th...) axis is a 3-D volume
    if len(shape) != 3:
        kind = "2-D image" if len(shape) < 3 else f"{len(shape)}-D image of shape {shape}"
        raise ScanFormatError(f"{path}: a {kind}; a scan must be one 3-D volume")
    if min(shape) < 1:
        raise ScanFormatError(f"{path}: empty volume of shape {shape}")
    if not placed:
        return shape
    if int(img.header["qform_code"]) == 0 and int(img.header["sform_code"]) == 0:
        raise ScanFormatError(
            f"{path}: the header has no usable affine (qform and sform codes are 0): it does "
            "not say where the voxels are nor which side is left; set the orientation in the "
            "header (e.g. with 3D Slicer or fslorient) and open it again"
        )
    affine = np.asarray(img.affine, float)
    sizes = spacing_of(affine)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise ScanFormatError(
            f"{path}: the header has no usable affine (voxel sizes {np.round(sizes, 4).tolist()}); "
            "cannot place the voxels in space"
        )
    return shape


def _read_array(img, path: Path, shape) -> np.ndarray:
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)  # applies scl_slope / scl_inter
    except Exception as exc:  # truncated or damaged data
        raise ScanFormatError(
            f"{path}: cannot read the voxels ({type(exc).__name__}: {exc})"
        ) from exc
    data = data.reshape(shape)
    if not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    return data


def _warn_if_large(shape, path: Path, n_files: int, notes: list[str]) -> None:
    voxels = int(np.prod(shape))
    if voxels <= LARGE_VOXELS:
        return
    gb = voxels * 4 * (n_files + 3) / 1e9
    text = (
        f"{path}: a large volume ({' x '.join(map(str, shape))} = {voxels / 1e6:.0f} M voxels); "
        f"reading {n_files} file(s) needs about {gb:.1f} GB of memory and may take a minute; the "
        "network sees each slice at its own size (128 x 128)"
    )
    warnings.warn(text, LargeScanWarning, stacklevel=3)
    notes.append(text)


def _onto_flair_grid(data, affine, flair_affine, flair_shape, path: Path) -> np.ndarray:
    try:
        return resample_onto(data, affine, flair_affine, flair_shape)
    except GridsApartError as exc:
        raise ScanFormatError(
            f"{path}: does not overlap the FLAIR in space ({exc}); sequences of different "
            "patients in one folder, or a broken header?"
        ) from None


def same_grid(a: np.ndarray, b: np.ndarray) -> bool:
    """Two affines equal to a micrometre."""
    return bool(np.allclose(a, b, atol=1e-3))


def read_nifti_case(path: str | os.PathLike, all_sequences: bool = False) -> ScanCase:
    """Read a NIfTI case folder or file into a :class:`ScanCase`; raises ScanFormatError naming
    the file. ``all_sequences`` also reads sequences the model does not use (T2) into
    ``others``, for viewing."""
    found = nifti_case_files(path)
    files = found.files
    ref = load_nifti(files[FLAIR_SEQ])
    shape = volume_shape(ref, files[FLAIR_SEQ])
    notes: list[str] = [f"ignored {p.name}: its name says no sequence" for p in found.ignored]
    wanted = [s for s in (PRE, POST, T2) if s in files and (all_sequences or s != T2)]
    _warn_if_large(shape, files[FLAIR_SEQ], 1 + len(wanted), notes)
    orientation = Orientation.of(ref.affine, shape)
    notes.extend(orientation.describe(ref.affine))
    image = _new_image(orientation, shape)  # filled channel by channel: no stacked copies
    image[..., 1] = orientation.to_model(_read_array(ref, files[FLAIR_SEQ], shape))
    volumes: dict[str, np.ndarray] = {}
    for seq in wanted:
        img = load_nifti(files[seq])
        data = _read_array(img, files[seq], volume_shape(img, files[seq]))
        if data.shape != shape or not same_grid(img.affine, ref.affine):
            data = _onto_flair_grid(data, img.affine, ref.affine, shape, files[seq])
            notes.append(
                f"{seq} ({files[seq].name}) resampled onto the FLAIR's grid through the files' "
                "affines (no registration)"
            )
        if seq in _CHANNELS:
            image[..., _CHANNELS[seq]] = orientation.to_model(data)
            volumes[seq] = image[..., _CHANNELS[seq]]
        else:
            volumes[seq] = np.ascontiguousarray(orientation.to_model(data))
    for seq, c in _CHANNELS.items():
        if seq not in volumes:
            image[..., c] = image[..., 1]  # a missing sequence: FLAIR stands in, as in the LGG set
    label = None
    if LABEL in files:
        label = orientation.to_model(_read_label(files[LABEL], shape, ref.affine, notes))
    missing = tuple(s for s in (PRE, POST) if s not in volumes)
    if missing:
        notes.append(f"{' and '.join(missing)} missing: FLAIR stands in for it")
    return ScanCase(
        found.case_id,
        Path(path),
        dict(files),
        ref,
        orientation,
        image=image,
        missing_sequences=missing,
        label=None if label is None else np.ascontiguousarray(label),
        notes=notes,
        others={T2: volumes[T2]} if T2 in volumes else {},
    )


_CHANNELS = {PRE: 0, POST: 2}  # FLAIR is channel 1 (lgg_io.SEQUENCES)


def _new_image(orientation: Orientation, file_shape) -> np.ndarray:
    zyx = orientation.to_model(np.empty(file_shape, np.bool_)).shape
    return np.empty((*zyx, 3), np.float32)


def _read_label(path: Path, shape, flair_affine, notes: list[str]) -> np.ndarray:
    img = load_nifti(path)
    lshape = volume_shape(img, path, placed=False)  # on the FLAIR's grid: its voxels suffice
    if lshape != shape:
        raise ScanFormatError(
            f"{path}: label of shape {lshape}, but the FLAIR has {shape}; a label file must be "
            "on the FLAIR's grid"
        )
    if not same_grid(img.affine, flair_affine):
        notes.append(f"{path.name}: its affine differs from the FLAIR's; voxels taken as aligned")
    try:
        data = np.asanyarray(img.dataobj).reshape(shape)
    except Exception as exc:
        raise ScanFormatError(
            f"{path}: cannot read the voxels ({type(exc).__name__}: {exc})"
        ) from exc
    return (data > 0).astype(np.uint8)
