"""napari writer: a Labels layer of an LGG patient -> a corrections folder.

The layer must carry ``metadata["lggseg"]`` as the reader (and the widgets) set it: the patient id
and its image folder, plus ``reviewed_slices`` (0-based indices the person checked) and ``model``
(the model that proposed the mask, if any). The folder gets one ``<P>_<n>_mask.tif`` per slice and a
JSON sidecar pointing back at the images; see :func:`napari_lggseg.lgg_io.write_corrections`, which
refuses any folder holding patient images, so the dataset's expert masks are never overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path

from .layer_meta import META_KEY, PLUGIN, read_meta
from .lgg_io import SIDECAR, LGGWriteError, write_corrections

# Errors leave this module as LGGWriteError (an OSError): napari's save swallows a writer's
# ValueError and shows only "not a valid writer", losing the reason.


def default_corrections_folder(patient_id: str) -> Path:
    """Where corrections go unless the user says otherwise: the user's data folder, never the
    dataset (``~/.local/share/napari-lggseg/corrections/<patient>`` on Linux)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir(PLUGIN)) / "corrections" / patient_id


def write_labels(path: str, data, meta: dict) -> list[str]:
    """Write one Labels layer as a corrections folder at ``path``; returns the files written."""
    name = meta.get("name", "labels layer")
    lgg = read_meta(meta)
    if lgg is None:
        raise LGGWriteError(
            f"layer '{name}' does not belong to an LGG patient (no '{META_KEY}' metadata); open the "
            "patient with napari-lggseg and draw on its ground truth or segmentation layer"
        )
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
