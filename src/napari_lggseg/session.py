"""A viewer's segmentation results, per patient: what the Segment tumour widget shows. No Qt, and
napari only through the viewer it is given.

* :func:`segment_input` is the run itself (in a worker thread): model, mask, and what the GUI
  thread should not compute (tumour size, Dice against the captured ground truth, slices to
  check first).
* :class:`SegmentSession` puts a finished run into the viewer without overwriting a person's work
  (an edited or reviewed prediction is kept and the result goes to "<patient> prediction 2"),
  re-thresholds from the cached probabilities keeping reviewed slices as the person left them,
  and measures the tumour (volume, Dice against the open ground truth).

A run is bound to its input (:class:`napari_lggseg.patients.RunInput`) when it starts; the
session places the result on that patient whatever is selected meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .layer_meta import Role, derive_meta, layer_kwargs, read_meta
from .patients import RunInput, find_patients
from .review import is_touched, is_tracked, reviewed_slices, tracker_for


@dataclass
class RunOutcome:
    """A finished segmentation run, measured in its worker."""

    seg: object  # inference.Segmentation: probabilities, mask, threshold, timing
    voxels: int
    dice: float | None  # against the ground truth captured at Run, if any
    review: list[tuple[int, float]]  # slices to check first: (0-based index, uncertain voxels)
    notes: list[str] = field(default_factory=list)  # what was done for the network (resampling)


def scan_spacing(layer) -> tuple[float, ...] | None:
    """The voxel spacing (z, y, x mm) of a scan's image layer, or None for LGG slices (which
    carry none). This plugin's reader keeps the file's spacing in the metadata; a layer opened
    by another NIfTI reader gives it as its ``scale`` (a ``.nii`` source, or a scale that is not
    napari's default 1, 1, 1)."""
    if layer is None:
        return None
    meta = read_meta(layer) or {}
    if meta.get("spacing"):
        return tuple(float(s) for s in meta["spacing"])
    if meta.get("folder") or meta.get("slice_files"):
        return None  # an LGG patient (or the sample): slices without a spacing
    scale = tuple(float(s) for s in layer.scale)
    path = str(getattr(getattr(layer, "source", None), "path", None) or "").lower()
    if path.endswith((".nii", ".nii.gz")) or any(abs(s - 1.0) > 1e-9 for s in scale):
        return scale
    return None


def network_note(segmenter, n_slices: int, spacing_z: float) -> list[str]:
    """Says when thin slices are resampled through-plane for the network (as ``lggseg segment``
    does for a NIfTI case)."""
    from .geometry import resolve_slice_spacing, through_plane_slices

    target = resolve_slice_spacing("auto", segmenter.recipe)
    n_net = through_plane_slices(n_slices, spacing_z, target)
    if n_net == n_slices:
        return []
    return [
        f"{n_slices} slices of {spacing_z:g} mm resampled to {n_net} slices of {target:g} mm "
        "for the network; probabilities mapped back onto every slice"
    ]


def segment_input(
    inp: RunInput,
    model: str,
    device: str,
    tta: bool,
    threshold: float,
    postprocess: str,
    cache: dict,
    cancel=None,
    on_stage=None,
    on_progress=None,
    spacing=None,
) -> RunOutcome | None:
    """Segment a captured input with ``model`` (reused from ``cache`` per (model, device)), and
    measure the mask and rank the slices to review. None when cancelled.

    A scan's ``spacing`` (z, y, x mm; :func:`scan_spacing`) goes through
    :func:`napari_lggseg.geometry.segment_volume`, as ``lggseg segment`` does: thin slices are
    resampled through-plane for the network and the probabilities mapped back. LGG slices
    (``spacing`` None) go to the network as they are."""
    from .inference import Cancelled, Segmenter
    from .metrics import dice
    from .uncertainty import slices_to_review

    def stage(text):
        if on_stage is not None:
            on_stage(text)

    segmenter = cache.get((model, device))
    if segmenter is None:
        stage(f"loading model {model} on {device}")
        segmenter = cache[(model, device)] = Segmenter.from_store(model, device)
    segmenter.tta = tta
    volume = inp.volume()
    stage(f"segmenting {inp.patient_id} with {segmenter.name} on {segmenter.device}")
    notes: list[str] = []
    try:
        if spacing is None:
            seg = segmenter.segment(
                volume, threshold, postprocess, cancel=cancel, progress=on_progress
            )
        else:
            from .geometry import segment_volume

            notes = network_note(segmenter, len(volume), float(spacing[0]))
            seg = segment_volume(
                segmenter,
                volume,
                spacing,
                threshold=threshold,
                postprocess=postprocess,
                progress=on_progress,
                cancel=cancel,
            )
    except Cancelled:
        return None
    if cancel is not None and cancel.is_set():
        return None
    mask = seg.mask > 0
    truth = inp.truth
    d = dice(mask, truth > 0) if truth is not None and truth.shape == mask.shape else None
    return RunOutcome(seg, int(mask.sum()), d, slices_to_review(seg.prob), notes)


@dataclass
class SegmentResult:
    """The latest run of one patient: the layer it went to, its probabilities (for
    re-thresholding), its input and its slices to check first."""

    layer: object
    seg: object
    inp: RunInput
    review: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Placement:
    """Where :meth:`SegmentSession.place` put a result, and what it says about it."""

    layer: object
    notes: list[str]
    reused: bool


@dataclass
class Measurement:
    voxels: int
    millilitres: float | None  # with a voxel spacing
    dice: float | None  # against the patient's open ground truth (or the one captured at Run)

    def volume_text(self) -> str:
        text = f"Tumour volume: {self.voxels:,} voxels"
        return text if self.millilitres is None else text + f" = {self.millilitres:.2f} mL"

    def dice_text(self) -> str:
        return "" if self.dice is None else f"Dice against the ground truth: {self.dice:.3f}"


class SegmentSession:
    """Per-patient results in one viewer (see the module docstring)."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.tracker = tracker_for(viewer)
        self.results: dict[str, SegmentResult] = {}
        self._fresh: tuple[object, RunOutcome] | None = None  # measured by the worker

    # ------------------------------------------------------------------ results

    def result(self, patient_id: str | None) -> SegmentResult | None:
        """The latest result of ``patient_id`` whose layer is still open."""
        res = self.results.get(patient_id or "")
        if res is not None and res.layer not in self.viewer.layers:
            return None
        return res

    def forget(self, layer) -> None:
        """A layer was removed: drop the results it held."""
        for pid, res in list(self.results.items()):
            if res.layer is layer:
                del self.results[pid]

    def prediction_layers(self, patient_id: str | None) -> list:
        return [
            lyr
            for lyr in self.viewer.layers
            if (m := read_meta(lyr))
            and m.get("role") == Role.PREDICTION
            and m["patient_id"] == patient_id
        ]

    def _free_name(self, base: str) -> str:
        names = {lyr.name for lyr in self.viewer.layers}
        k = 2
        name = base
        while name in names:
            name, k = f"{base} {k}", k + 1
        return name

    # ------------------------------------------------------------------ placing a run

    def place(self, inp: RunInput, outcome: RunOutcome, model: str = "") -> Placement:
        """Put a finished run on the patient it was started for: update an untouched
        prediction of that patient in place, else add a new, versioned layer (edits are never
        overwritten). The person's selection stays on another patient's layer."""
        pid = inp.patient_id
        mask = np.asarray(outcome.seg.mask, dtype=np.uint8).copy()
        kept = [lyr.name for lyr in self.prediction_layers(pid)]
        reuse = [
            lyr
            for lyr in self.prediction_layers(pid)
            if not is_touched(lyr) and lyr.data.shape == mask.shape
        ]
        if reuse:
            layer = reuse[-1]
            with self.tracker.programmatic(layer):
                layer.data = mask
            read_meta(layer).update(model=model, reviewed_slices=[], edited=False)
            notes = [f"updated '{layer.name}'"]
        else:
            layer = self._add_prediction(inp, mask, model)
            notes = [f"added '{layer.name}'" + (f"; kept your edited '{kept[-1]}'" if kept else "")]
        if inp.images_closed(self.viewer.layers):
            notes.append(
                f"{pid}'s images were closed during the run, the prediction was added anyway"
            )
        self.results[pid] = SegmentResult(layer, outcome.seg, inp, list(outcome.review))
        self._fresh = (layer, outcome)
        return Placement(layer, notes, bool(reuse))

    def _add_prediction(self, inp: RunInput, mask: np.ndarray, model: str):
        meta = derive_meta(inp.meta, Role.PREDICTION, model=model, reviewed_slices=[])
        selection = self.viewer.layers.selection
        active, chosen = selection.active, set(selection)
        layer = self.viewer.add_labels(
            mask,
            **layer_kwargs(self._free_name(f"{inp.patient_id} prediction"), meta),
            scale=inp.scale,
            translate=inp.translate,
            opacity=0.6,
        )
        if active is not None and (read_meta(active) or {}).get("patient_id") != inp.patient_id:
            # the person works on another patient: a finished run must not take their layer away
            selection.clear()
            selection.update(chosen)
            selection.active = active
        return layer

    # ------------------------------------------------------------------ re-thresholding

    def rethreshold(self, patient_id: str, threshold: float, postprocess: str) -> str | None:
        """New mask for the patient's result from its cached probabilities; reviewed slices keep
        what the person made (a re-threshold never changes them, so it needs no undo). Returns
        the status to show, or None when the patient has no result."""
        res = self.result(patient_id)
        if res is None:
            return None
        layer = res.layer
        keep = reviewed_slices(layer)
        if read_meta(layer).get("edited") and not keep:
            return (
                f"'{layer.name}' was changed outside napari's tools: not re-thresholded. "
                "Run again for a new version."
            )
        mask = res.seg.rethreshold(threshold, postprocess).astype(np.uint8)
        if keep:
            mask[keep] = np.asarray(layer.data)[keep]
        with self.tracker.programmatic(layer):
            layer.data = mask
        self._fresh = None
        kept = f"; your {len(keep)} reviewed slice(s) kept" if keep else ""
        return f"'{layer.name}': threshold {threshold:.2f}, {postprocess}{kept}."

    def changed(self) -> None:
        """A mask or a ground truth changed: measure again from the layers."""
        self._fresh = None

    # ------------------------------------------------------------------ measuring

    def measure(self, patient_id: str | None, spacing=None) -> Measurement | None:
        """Tumour volume (voxels; mL with ``spacing`` z, y, x in mm) and Dice of the patient's
        result; taken from the worker's figures while the mask is as it produced it."""
        from .metrics import dice, tumour_volume

        res = self.result(patient_id)
        if res is None:
            return None
        fresh = self._fresh
        if fresh is not None and fresh[0] is res.layer:
            voxels, d = fresh[1].voxels, fresh[1].dice
        else:
            self._fresh = None
            mask = np.asarray(res.layer.data) > 0
            voxels = tumour_volume(mask)["voxels"]
            patient = find_patients(self.viewer.layers).get(res.inp.patient_id)
            truth = patient.ground_truth if patient else None
            truth = np.asarray(truth.data) if truth is not None else res.inp.truth
            ok = truth is not None and truth.shape == mask.shape
            d = dice(mask, truth > 0) if ok else None
        ml = None if spacing is None else voxels * float(np.prod(spacing)) / 1000
        return Measurement(voxels, ml, d)

    # ------------------------------------------------------------------ review

    def review_target(self, active=None, patient_id: str | None = None):
        """The mask "Mark slice reviewed" acts on: the active layer when it is a patient's mask,
        else the patient's latest result, else its last prediction."""
        if active is not None and is_tracked(active):
            return active
        res = self.result(patient_id)
        if res is not None:
            return res.layer
        preds = self.prediction_layers(patient_id) if patient_id else []
        return preds[-1] if preds else None
