"""napari writer: a Labels layer of an LGG patient -> a corrections folder; of a NIfTI case ->
``<folder>/<case>_mask.nii.gz`` on the scan's own grid (:func:`napari_lggseg.scan_masks.save_mask`).

The layer must carry ``metadata["lggseg"]`` as the reader (and the widgets) set it: the patient id
and its image folder, plus ``reviewed_slices`` (0-based indices the person checked) and ``model``
(the model that proposed the mask, if any). The folder gets one ``<P>_<n>_mask.tif`` per slice and a
JSON sidecar pointing back at the images; see :func:`napari_lggseg.lgg_io.write_corrections`, which
refuses any folder holding patient images, so the dataset's expert masks are never overwritten.
A NIfTI case's layer carries ``scan_source`` (what the reader opened); the mask is written with
the FLAIR's header geometry, re-read from that source, and a sidecar; never into the case's folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .layer_meta import META_KEY, Role, read_meta, sidecar_fields
from .lgg_io import SIDECAR, LGGWriteError, write_corrections

# Errors leave this module as LGGWriteError (an OSError): napari's save swallows a writer's
# ValueError and shows only "not a valid writer", losing the reason.


def write_labels(path: str, data, meta: dict) -> list[str]:
    """Write one Labels layer as a corrections folder at ``path``; returns the files written."""
    name = meta.get("name", "labels layer")
    lgg = read_meta(meta)
    if lgg is None:
        raise LGGWriteError(
            f"layer '{name}' does not belong to an LGG patient (no '{META_KEY}' metadata); open the "
            "patient with napari-lggseg and draw on its ground truth or segmentation layer"
        )
    if lgg.get("scan_source") or (lgg.get("source_paths") and not lgg.get("folder")):
        return _write_scan_mask(Path(path), data, lgg, name)
    if not lgg.get("folder"):
        raise LGGWriteError(
            f"layer '{name}' has no patient image folder (sample data?); corrections need the "
            "patient's images on disk"
        )
    out = Path(path)
    if out.suffix.lower() in (".tif", ".tiff", ".json"):
        raise LGGWriteError(
            f"{out}: corrections are saved as a folder; give a folder name without an extension"
        )
    try:
        sidecar = write_corrections(
            out,
            data,
            patient_id=lgg["patient_id"],
            source_folder=lgg["folder"],
            reviewed_slices=lgg.get("reviewed_slices") or (),
            model=lgg.get("model"),
            whole_volume_reviewed=bool(lgg.get("whole_volume_reviewed", False)),
            extra=sidecar_fields(lgg),
        )
    except ValueError as exc:  # LGGFormatError: wrong shape, images moved, bad slice indices
        raise LGGWriteError(f"cannot save layer '{name}' to {out}: {exc}") from exc
    folder = sidecar.parent
    masks = sorted((p for p in folder.iterdir() if p.name.endswith("_mask.tif")), key=_slice_number)
    return [os.fspath(p) for p in masks] + [os.fspath(folder / SIDECAR)]


def _slice_number(p: Path) -> int:
    try:
        return int(p.name[: -len("_mask.tif")].rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def _scan_source(lgg: dict) -> Path:
    """What the reader opened: ``scan_source``, else the folder (or single file) of the layer's
    ``source_paths`` (layers derived by code that kept only those)."""
    if lgg.get("scan_source"):
        return Path(lgg["scan_source"])
    paths = [Path(p) for p in lgg["source_paths"]]
    parents = {p.parent for p in paths}
    return parents.pop() if len(paths) > 1 and len(parents) == 1 else paths[0]


def _mask_kind(lgg: dict) -> str:
    """``prediction`` for a model's untouched mask, else ``corrections`` (a person's work)."""
    untouched = not lgg.get("edited") and not lgg.get("reviewed_slices")
    return "prediction" if lgg.get("role") == Role.PREDICTION and untouched else "corrections"


def _write_scan_mask(out: Path, data, lgg: dict, name: str) -> list[str]:
    from .cases import read_header
    from .scan_io import MASK_SUFFIX, ScanFormatError
    from .scan_masks import mask_paths, save_mask

    case_id = lgg["patient_id"]
    if out.name.lower().endswith((".nii", ".nii.gz", ".json")):
        raise LGGWriteError(
            f"{out}: masks are saved into a folder (as {case_id}{MASK_SUFFIX}); give a folder "
            "name without an extension"
        )
    try:
        header = read_header(_scan_source(lgg))
        if header.case_id != case_id:
            raise ScanFormatError(f"{header.source} holds case {header.case_id}, not {case_id}")
        if lgg.get("affine") is not None and not np.allclose(
            header.model_affine, np.asarray(lgg["affine"], float), atol=1e-3
        ):
            raise ScanFormatError(
                f"{header.files['FLAIR']}: its geometry changed since the layer was opened"
            )
        mask_file = save_mask(
            header,
            data,
            out,
            kind=_mask_kind(lgg),
            reviewed_slices=lgg.get("reviewed_slices") or (),
            model=lgg.get("model"),
            whole_volume_reviewed=bool(lgg.get("whole_volume_reviewed", False)),
            extra=sidecar_fields(lgg),
        )
    except ValueError as exc:  # ScanFormatError: source moved or changed, wrong shape
        raise LGGWriteError(f"cannot save layer '{name}' to {out}: {exc}") from exc
    except OSError as exc:  # ScanWriteError: the source folder, a folder of scans...
        raise LGGWriteError(f"cannot save layer '{name}': {exc}") from exc
    return [os.fspath(p) for p in mask_paths(mask_file.parent, case_id)]
