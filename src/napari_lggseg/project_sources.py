"""The case-format specific part of an annotation project: one small adapter per format. No Qt.

An adapter lists a source's cases, reads one, and writes and reads back a person's edit of it in
the format's own layout (an LGG corrections folder; a NIfTI mask with its sidecar). It never
writes into the source. :func:`detect_source` picks the adapter for a folder.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .project_store import (
    PROJECT_FILE,
    CaseReadError,
    ProjectError,
    ProjectFormatError,
    write_json_atomic,
)


@dataclass
class CaseData:
    """One case as the project hands it to a viewer: images, expert mask, geometry."""

    case_id: str
    image: np.ndarray  # (Z, H, W, 3) in LGG channel order, or what the format's reader gives
    expert_mask: np.ndarray | None
    spacing: tuple[float, float, float] | None  # z, y, x in mm; None where the format has none
    path: Path  # the case's folder or file in the source
    extra: dict = field(default_factory=dict)  # format-specific (an affine, the reader's object)


@dataclass
class SavedEdit:
    """A person's mask of one case as last saved (or still waiting to be saved)."""

    mask: np.ndarray
    reviewed_slices: list[int]
    whole_volume_reviewed: bool = False
    model: str | None = None
    saved_at: str = ""


class CaseSource:
    """The case-format specific part of a project: list, read, save an edit, read it back.
    Subclasses never write into ``root``."""

    kind = ""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def list_cases(self) -> list[str]:
        raise NotImplementedError

    def check(self, case_id: str) -> None:
        """Cheap validation (names only); raises CaseReadError naming the file."""

    def load(self, case_id: str) -> CaseData:
        raise NotImplementedError

    def save_edit(self, case_id: str, folder: Path, edit: SavedEdit) -> None:
        raise NotImplementedError

    def edit_info(self, folder: Path) -> dict | None:
        """The saved edit's sidecar (reviewed slices, whole_volume_reviewed, created), no pixels."""
        raise NotImplementedError

    def read_edit(self, case_id: str, folder: Path) -> SavedEdit:
        raise NotImplementedError

    def segment(self, segmenter, data: CaseData, progress=None, cancel=None):
        """An ``inference.Segmentation`` of the case on its own grid."""
        return segmenter.segment(data.image, progress=progress, cancel=cancel)


class LGGSource(CaseSource):
    """A ``kaggle_3m``-style root; edits are corrections folders (:mod:`lgg_io`)."""

    kind = "lgg"

    def list_cases(self) -> list[str]:
        from . import lgg_io

        return [p.name for p in lgg_io.list_patients(self.root)]

    def check(self, case_id: str) -> None:
        from . import lgg_io

        try:
            lgg_io.find_patient(self.root / case_id)
        except lgg_io.LGGFormatError as exc:
            raise CaseReadError(str(exc)) from exc

    def load(self, case_id: str) -> CaseData:
        from . import lgg_io

        try:
            p = lgg_io.read_patient(self.root / case_id)
        except (lgg_io.LGGFormatError, OSError) as exc:
            raise CaseReadError(str(exc)) from exc
        return CaseData(case_id, p.image, p.mask, None, p.folder, {"slice_files": p.slice_files})

    def save_edit(self, case_id: str, folder: Path, edit: SavedEdit) -> None:
        from . import lgg_io

        lgg_io.write_corrections(
            folder,
            edit.mask,
            case_id,
            self.root / case_id,
            reviewed_slices=edit.reviewed_slices,
            model=edit.model,
            whole_volume_reviewed=edit.whole_volume_reviewed,
            extra={"kind": "corrections", "origin": "annotation project"},
        )

    def edit_info(self, folder: Path) -> dict | None:
        from . import lgg_io

        try:
            return json.loads((Path(folder) / lgg_io.SIDECAR).read_text())
        except (OSError, ValueError):
            return None

    def read_edit(self, case_id: str, folder: Path) -> SavedEdit:
        from . import lgg_io

        self._repoint(case_id, folder)
        try:
            c = lgg_io.read_corrections(folder)
        except (lgg_io.LGGFormatError, OSError) as exc:
            raise CaseReadError(str(exc)) from exc
        return SavedEdit(
            c.mask, list(c.reviewed_slices), c.whole_volume_reviewed, c.model, c.created
        )

    def _repoint(self, case_id: str, folder: Path) -> None:
        """After a relink the sidecar still names the old image folder: point it at the new one
        (the sidecar lives in the project folder, never in the source)."""
        from . import lgg_io

        info = self.edit_info(folder)
        new = str((self.root / case_id).resolve())
        if info is not None and info.get("source_folder") != new:
            info["source_folder"] = new
            with contextlib.suppress(OSError):  # read-only project: read_corrections says why
                write_json_atomic(Path(folder) / lgg_io.SIDECAR, info)


class NiftiSource(CaseSource):
    """A folder of NIfTI case folders (:mod:`scan_io`); an edit is ``<case>_mask.nii.gz`` on the
    scan's own grid with its sidecar (:mod:`scan_masks`), staged as one folder so mask and sidecar
    are replaced together. The case last read is kept, so autosave writes with its header
    without reading the scan again."""

    kind = "nifti"

    def __init__(self, root):
        super().__init__(root)
        self._paths: dict[str, Path] = {}
        self._loaded: tuple[str, object] | None = None

    def list_cases(self) -> list[str]:
        from . import scan_io
        from .cases import case_files, find_cases

        self._paths = {}
        for path in find_cases(self.root):
            try:
                case_id = case_files(path).case_id
            except (scan_io.ScanFormatError, OSError):
                case_id = path.name  # check() reports why it cannot be read
            self._paths[case_id] = path
        return list(self._paths)

    def _path(self, case_id: str) -> Path:
        if case_id not in self._paths:
            self.list_cases()
        if case_id not in self._paths:
            raise CaseReadError(f"{self.root}: no case {case_id} in this folder")
        return self._paths[case_id]

    def check(self, case_id: str) -> None:
        from . import scan_io
        from .cases import case_files

        try:
            case_files(self._path(case_id))
        except (scan_io.ScanFormatError, OSError) as exc:
            raise CaseReadError(str(exc)) from exc

    def _case(self, case_id: str):
        from . import scan_io
        from .cases import read_case

        if self._loaded is None or self._loaded[0] != case_id:
            try:
                self._loaded = (case_id, read_case(self._path(case_id)))
            except (scan_io.ScanFormatError, OSError) as exc:
                raise CaseReadError(str(exc)) from exc
        return self._loaded[1]

    def load(self, case_id: str) -> CaseData:
        self._loaded = None  # read afresh: the files may have been fixed
        case = self._case(case_id)
        return CaseData(case_id, case.image, case.label, case.spacing, case.source, {"case": case})

    def segment(self, segmenter, data: CaseData, progress=None, cancel=None):
        from .geometry import segment_case

        return segment_case(segmenter, data.extra["case"], progress=progress, cancel=cancel)

    def save_edit(self, case_id: str, folder: Path, edit: SavedEdit) -> None:
        from .atomic import staged_folder
        from .scan_masks import save_mask

        case = self._case(case_id)
        with staged_folder(folder, replace=True) as staging:
            save_mask(
                case,
                edit.mask,
                staging,
                kind="corrections",
                reviewed_slices=edit.reviewed_slices,
                model=edit.model,
                whole_volume_reviewed=edit.whole_volume_reviewed,
                extra={"origin": "annotation project"},
            )

    def _sidecar(self, folder: Path) -> Path | None:
        from .scan_io import MASK_SIDECAR_SUFFIX

        found = (
            sorted(Path(folder).glob(f"*{MASK_SIDECAR_SUFFIX}")) if Path(folder).is_dir() else []
        )
        return found[0] if found else None

    def edit_info(self, folder: Path) -> dict | None:
        sidecar = self._sidecar(folder)
        try:
            return json.loads(sidecar.read_text()) if sidecar else None
        except (OSError, ValueError):
            return None

    def read_edit(self, case_id: str, folder: Path) -> SavedEdit:
        from . import scan_io
        from .scan_masks import read_saved_mask

        self._repoint(case_id, folder)
        try:
            if self._loaded is not None and self._loaded[0] == case_id:
                mask = self._mask_onto(self._loaded[1], folder)  # the scan is read already
            else:
                mask = read_saved_mask(folder).mask
        except (scan_io.ScanFormatError, OSError) as exc:
            raise CaseReadError(str(exc)) from exc
        meta = self.edit_info(folder) or {}
        return SavedEdit(
            mask,
            [int(i) for i in meta.get("reviewed_slices", [])],
            bool(meta.get("whole_volume_reviewed", False)),
            meta.get("model"),
            meta.get("created", ""),
        )

    @staticmethod
    def _mask_onto(case, folder: Path) -> np.ndarray:
        """The saved mask on the loaded case's grid, with read_saved_mask's grid check, without
        reading the case's scans a second time."""
        from .scan_io import ScanFormatError, load_nifti, same_grid, volume_shape
        from .scan_masks import mask_paths

        mask_file, _ = mask_paths(folder, case.case_id)
        img = load_nifti(mask_file)
        shape = tuple(case.reference.shape[:3])
        if volume_shape(img, mask_file) != shape or not same_grid(img.affine, case.affine):
            raise ScanFormatError(f"{mask_file}: its grid differs from its case's scan")
        data = np.asanyarray(img.dataobj).reshape(shape)
        return case.orientation.to_model((data > 0).astype(np.uint8))

    def _repoint(self, case_id: str, folder: Path) -> None:
        """After a relink the sidecar names the old scan: point it at the case's new place."""
        info, sidecar = self.edit_info(folder), self._sidecar(folder)
        if info is None:
            return
        new = str(self._path(case_id).resolve())
        if info.get("source") != new:
            old = info.get("source", "")
            info["source"] = new
            info["source_files"] = {
                seq: p.replace(old, new, 1) for seq, p in info.get("source_files", {}).items()
            }
            with contextlib.suppress(OSError):
                write_json_atomic(sidecar, info)


SOURCES = {cls.kind: cls for cls in (LGGSource, NiftiSource)}


def detect_source(path: str | os.PathLike) -> CaseSource:
    """The adapter that reads ``path``; ProjectError naming the folder when none does."""
    from . import lgg_io

    path = Path(path)
    if not path.is_dir():
        raise ProjectError(f"{path}: the data source must be an existing folder")
    if lgg_io.is_patient_root(path):
        return LGGSource(path)
    source = NiftiSource(path)
    if source.list_cases():
        return source
    raise ProjectError(
        f"{path}: no cases found (expected a folder of LGG patient folders or of NIfTI cases)"
    )


def check_separate(source_root: Path, folder: Path) -> None:
    src, proj = source_root.resolve(), folder.resolve()
    if proj == src or proj.is_relative_to(src):
        raise ProjectError(
            f"{folder}: the project folder must be outside the data source {source_root}, "
            "which the project never writes to"
        )


def source_entry(source, folder: Path) -> dict:
    root = source.root.resolve()
    try:
        rel = os.path.relpath(root, folder.resolve())
    except ValueError:  # another drive on Windows
        rel = None
    return {"kind": source.kind, "path": rel or str(root), "absolute": str(root)}


def source_from_state(folder: Path, state: dict):
    """The source at its relative path (project and data moved together), else its absolute one;
    when neither exists the relative one, so that every case reads as missing."""
    entry = state.get("source") or {}
    cls = SOURCES.get(entry.get("kind"))
    if cls is None:
        raise ProjectFormatError(
            f"{folder / PROJECT_FILE}: unknown source kind {entry.get('kind')!r}"
        )
    candidates = [folder / p for p in (entry.get("path"), entry.get("absolute")) if p]
    if not candidates:
        raise ProjectFormatError(f"{folder / PROJECT_FILE}: the source has no path")
    ids = {c.get("case_id") for c in state.get("cases", [])}
    dirs = [cls(p) for p in candidates if p.is_dir()]
    for source in dirs:  # a folder that happens to exist at the old relative place is not it
        with contextlib.suppress(ProjectError, ValueError, OSError):
            if ids & set(source.list_cases()):
                return source
    return dirs[0] if dirs else cls(candidates[0])
