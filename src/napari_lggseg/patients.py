"""Patients among a viewer's layers, and the arrays a run takes from them. No Qt, and napari
only inside :func:`image_layers`.

A run is bound to its input when it starts: :func:`capture` copies references to the patient's
arrays and its id into a :class:`RunInput`, so the worker never looks at the viewer again and a
change of selection (or a closed layer) cannot send the result to another patient.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from .layer_meta import MASK_ROLES, Role, read_meta
from .lgg_io import SEQUENCES
from .review import reviewed_slices


@dataclass
class PatientLayers:
    """One patient's open layers, found from their ``metadata["lggseg"]``."""

    patient_id: str
    folder: str | None = None
    slice_files: list = field(default_factory=list)
    images: dict = field(default_factory=dict)  # sequence name -> Image layer
    ground_truth: object | None = None
    masks: list = field(default_factory=list)  # prediction and corrections Labels layers

    @property
    def flair(self):
        return self.images.get("FLAIR")


def find_patients(layers) -> dict[str, PatientLayers]:
    """Patients in layer order (first seen first)."""
    out: dict[str, PatientLayers] = {}
    for layer in layers:
        lgg = read_meta(layer)
        if lgg is None:
            continue
        p = out.setdefault(lgg["patient_id"], PatientLayers(lgg["patient_id"]))
        if p.folder is None and lgg.get("folder"):
            p.folder = lgg["folder"]
        if not p.slice_files and lgg.get("slice_files"):
            p.slice_files = list(lgg["slice_files"])
        role = lgg.get("role")
        if role == Role.IMAGE and lgg.get("sequence") in SEQUENCES:
            p.images.setdefault(lgg["sequence"], layer)
        elif role == Role.GROUND_TRUTH:
            p.ground_truth = p.ground_truth or layer
        elif role in (Role.PREDICTION, Role.CORRECTIONS):
            p.masks.append(layer)
    return out


def patient_of(layer) -> str | None:
    lgg = read_meta(layer)
    return lgg["patient_id"] if lgg else None


def image_layers(layers) -> list:
    """Layers usable as one sequence: 3-D grayscale images (Z, H, W)."""
    from napari.layers import Image

    return [
        lyr for lyr in layers if isinstance(lyr, Image) and not lyr.rgb and np.ndim(lyr.data) == 3
    ]


@dataclass
class RunInput:
    """Everything a segmentation run needs, taken from the viewer when Run was pressed."""

    patient_id: str
    flair: np.ndarray
    pre: np.ndarray | None = None
    post: np.ndarray | None = None
    folder: str | None = None
    slice_files: list = field(default_factory=list)
    scale: tuple = (1.0, 1.0, 1.0)
    translate: tuple = (0.0, 0.0, 0.0)
    truth: np.ndarray | None = None  # ground truth, for the per-volume Dice
    meta: dict = field(default_factory=dict)  # the FLAIR layer's plugin metadata (geometry, files)
    source: weakref.ref | None = None  # the FLAIR layer itself, without keeping it alive

    def images_closed(self, layers) -> bool:
        """The layers this run was computed from are no longer open (neither the FLAIR layer
        captured at Run nor, for an LGG patient, another FLAIR layer of the patient)."""
        layer = self.source() if self.source is not None else None
        if layer is not None and layer in layers:
            return False
        patient = find_patients(layers).get(self.patient_id)
        return patient is None or patient.flair is None

    def volume(self) -> np.ndarray:
        """(Z, H, W, 3) in LGG order; a missing pre/post-contrast is filled with FLAIR."""
        from .preprocess import assemble_channels

        return assemble_channels(self.flair, self.pre, self.post)


def _array(layer) -> np.ndarray | None:
    return None if layer is None else np.asarray(layer.data)


def capture(patient: PatientLayers) -> RunInput:
    """A run's input from a patient's layers (FLAIR required)."""
    if patient.flair is None:
        raise ValueError(
            f"patient {patient.patient_id}: its FLAIR layer is not open; open the patient again"
        )
    return _run_input(
        patient.patient_id,
        patient.flair,
        patient.images.get("pre-contrast"),
        patient.images.get("post-contrast"),
        patient.folder,
        patient.slice_files,
        patient.ground_truth,
    )


def capture_mapping(flair, pre=None, post=None, truth=None) -> RunInput:
    """A run's input from image layers the person mapped to FLAIR / pre / post-contrast."""
    if flair is None:
        raise ValueError("choose the layer that holds FLAIR")
    lgg = read_meta(flair) or {}
    return _run_input(
        lgg.get("patient_id") or flair.name,
        flair,
        pre,
        post,
        lgg.get("folder"),
        lgg.get("slice_files") or [],
        truth,
    )


def _run_input(pid, flair, pre, post, folder, slice_files, truth) -> RunInput:
    f = _array(flair)
    for name, lyr in (("pre-contrast", pre), ("post-contrast", post)):
        if lyr is not None and np.shape(lyr.data) != f.shape:
            raise ValueError(
                f"layer '{lyr.name}' ({name}) has shape {np.shape(lyr.data)}, "
                f"the FLAIR layer '{flair.name}' has {f.shape}"
            )
    t = _array(truth)
    if t is not None and t.shape != f.shape:
        t = None
    meta = dict(read_meta(flair) or {"patient_id": pid, "folder": folder})
    meta.update(patient_id=pid, folder=folder, slice_files=list(slice_files or []))
    return RunInput(
        pid,
        f,
        _array(pre),
        _array(post),
        folder,
        list(slice_files or []),
        tuple(float(s) for s in flair.scale),
        tuple(float(s) for s in flair.translate),
        t,
        meta,
        weakref.ref(flair),
    )


def training_candidates(layers) -> list[tuple[object, PatientLayers, list[int]]]:
    """(mask layer, its patient, reviewed slices) for every LGG mask with reviewed slices."""
    patients = find_patients(layers)
    out = []
    for layer in layers:
        lgg = read_meta(layer)
        if lgg is None or lgg.get("role") not in MASK_ROLES:
            continue
        rs = reviewed_slices(layer)
        if rs:
            out.append((layer, patients[lgg["patient_id"]], rs))
    return out
