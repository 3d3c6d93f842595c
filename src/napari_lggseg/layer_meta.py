"""The plugin's layer schema: its name, the metadata key, the roles of its layers, and how a
layer's metadata is made and read. No Qt and no napari import.

Every layer this plugin makes (reader, sample data, widgets) carries one plain dict under
``layer.metadata["lggseg"]``; readers, writers, widgets and the review record all go through the
functions here, so the keys are spelled in one place. Keys:

* ``patient_id`` (required) and ``role`` (one of :class:`Role`);
* ``folder``: the patient's image folder (LGG layout) or None (sample data, mapped layers);
* ``slice_files``: the LGG slice file names, in slice order;
* ``source_paths``: the files a scan was read from (NIfTI, DICOM), when not an LGG folder, and
  ``scan_source``: what the reader opened (the writer saves a mask on that scan's grid);
* ``affine`` (4x4, nested lists) and ``spacing`` (per axis, mm), when the file gave them;
* role-specific extras: ``sequence``/``missing_sequences`` (images); ``reviewed_slices``,
  ``edited``, ``model``, ``corrections_folder``, ``whole_volume_reviewed``, ``clicks`` (masks:
  the click corrections applied, ``[[z, y, x, positive], ...]`` voxel indices, which the writer
  puts in the sidecar: :func:`sidecar_fields`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum

import numpy as np

PLUGIN = "napari-lggseg"  # npe2 plugin name: napari.yaml, viewer.open(plugin=...), task status
META_KEY = "lggseg"  # layer.metadata[META_KEY] holds this plugin's dict


class Role(str, Enum):
    """What a layer holds. A ``str`` enum: ``meta["role"]`` is stored as its plain value."""

    IMAGE = "image"
    GROUND_TRUTH = "ground truth"
    CORRECTIONS = "corrections"
    PREDICTION = "prediction"
    CLICKS = "clicks"  # the Points layer of a mask's click corrections

    def __str__(self) -> str:  # f-strings and str() give the stored value
        return self.value


# masks whose slices a person reviews (and fine-tuning learns from)
MASK_ROLES: tuple[str, ...] = (
    Role.PREDICTION.value,
    Role.CORRECTIONS.value,
    Role.GROUND_TRUTH.value,
)


# what a layer derived from another (a prediction from its image) inherits
PROVENANCE_KEYS = (
    "patient_id",
    "folder",
    "slice_files",
    "source_paths",
    "scan_source",
    "affine",
    "spacing",
)


def make_meta(
    patient_id: str,
    role: Role | str,
    *,
    folder=None,
    slice_files: Iterable[str] = (),
    source_paths: Iterable = (),
    affine=None,
    spacing: Iterable[float] | None = None,
    **extra,
) -> dict:
    """A new metadata dict for one layer of ``patient_id`` (values plain Python, JSON-friendly)."""
    if not patient_id:
        raise ValueError("a layer's metadata needs a patient id")
    meta = {
        "patient_id": str(patient_id),
        "folder": None if folder is None else str(folder),
        "slice_files": [str(f) for f in slice_files],
        "role": Role(role).value,
    }
    paths = [str(p) for p in source_paths]
    if paths:
        meta["source_paths"] = paths
    if affine is not None:
        a = np.asarray(affine, dtype=float)
        if a.shape != (4, 4):
            raise ValueError(f"an affine is 4x4, got shape {a.shape}")
        meta["affine"] = a.tolist()
    if spacing is not None:
        meta["spacing"] = [float(s) for s in spacing]
    meta.update(extra)
    return meta


def layer_kwargs(name: str, meta: dict, **kwargs) -> dict:
    """napari layer keyword arguments (``name``, ``metadata``) carrying ``meta``."""
    return {"name": name, "metadata": {META_KEY: meta}, **kwargs}


def derive_meta(source: Mapping, role: Role | str, **extra) -> dict:
    """A metadata dict for a new layer of the same patient as ``source`` (its geometry and
    provenance copied, its review state not): e.g. a prediction made from an image layer."""
    meta = {k: _copy(source[k]) for k in PROVENANCE_KEYS if k in source}
    meta.setdefault("folder", None)
    meta.setdefault("slice_files", [])
    meta["role"] = Role(role).value
    meta.update(extra)
    return meta


def _copy(value):
    return [_copy(v) for v in value] if isinstance(value, (list, tuple)) else value


def read_meta(layer_or_metadata) -> dict | None:
    """The plugin's metadata dict of a layer (or of a ``metadata`` mapping / layer-tuple kwargs),
    the live dict itself, or None when the layer is not an LGG patient's."""
    meta = getattr(layer_or_metadata, "metadata", layer_or_metadata)
    if isinstance(meta, Mapping) and META_KEY not in meta and "metadata" in meta:
        meta = meta["metadata"]  # layer-tuple kwargs
    if not isinstance(meta, Mapping):
        return None
    lgg = meta.get(META_KEY)
    return lgg if isinstance(lgg, dict) and lgg.get("patient_id") else None


def role_of(layer) -> str | None:
    meta = read_meta(layer)
    return None if meta is None else meta.get("role")


def patient_id_of(layer) -> str | None:
    meta = read_meta(layer)
    return None if meta is None else meta["patient_id"]


def affine_of(layer) -> np.ndarray | None:
    """The 4x4 voxel-to-world affine the file gave, or None."""
    meta = read_meta(layer) or {}
    a = meta.get("affine")
    return None if a is None else np.asarray(a, dtype=float)


def spacing_of(layer) -> tuple[float, ...] | None:
    """The voxel spacing (mm per axis) the file gave, or None."""
    meta = read_meta(layer) or {}
    s = meta.get("spacing")
    return None if s is None else tuple(float(v) for v in s)


def _click_rows(clicks) -> list[list]:
    """``[[z, y, x, positive], ...]`` as plain ints and bools (JSON and napari metadata alike)."""
    return [[int(z), int(y), int(x), bool(p)] for z, y, x, p in clicks]


def sidecar_fields(meta: Mapping) -> dict:
    """What a mask's metadata adds to its saved sidecar beyond the review fields: ``clicks``
    (``[[z, y, x, positive], ...]``, voxel indices) when click correction was used."""
    clicks = meta.get("clicks")
    if not clicks:
        return {}
    return {"clicks": _click_rows(clicks)}


def fields_from_sidecar(sidecar: Mapping) -> dict:
    """The inverse of :func:`sidecar_fields`: what a reopened mask's layer metadata takes back
    from its sidecar, so saving it again keeps its clicks."""
    clicks = sidecar.get("clicks") or []
    try:
        return {"clicks": _click_rows(clicks)}
    except (TypeError, ValueError):  # a hand-edited sidecar: the mask still opens
        return {}


def is_paintable(layer) -> bool:
    """A layer a person paints on (napari's Labels, by its ``paint`` event: no napari import)."""
    return hasattr(getattr(layer, "events", None), "paint")


def unwrap_viewer(viewer):
    """napari hands dock widgets and plugins a ``PublicOnlyProxy``; runs and review records are
    bound to the viewer and its layers by identity, so keep the object itself (and use only its
    public API)."""
    return getattr(viewer, "__wrapped__", viewer)
