"""The Segment tumour dock: patient + model + device + options -> a "<patient> prediction" layer.

The view only: the form is built from magicgui widgets (scriptable, testable by value), a run
goes through the shared :class:`._runner.RunController`, the results live in a Qt-free
:class:`napari_lggseg.session.SegmentSession`, and the review list is :mod:`._review_list`.

How a run behaves, in the order a person meets it:

* **Bound at Run.** The patient's arrays, id, folder and scale are captured when Run is pressed
  (:func:`napari_lggseg.patients.capture`); the worker never reads the viewer's selection. If the
  person picks another patient meanwhile, the widget stays on that one (their next Run is for
  it), and the status line names the patient the result went to.
* **Layers closed mid-run.** The prediction is still added (it was computed from the arrays
  captured at Run) and the status line says that the images were closed.
* **Never overwrites your work.** An untouched prediction of the patient is updated in place; one
  with edits or reviewed slices is kept and the result goes to "<patient> prediction 2".
* **Cancel** stops the network within a batch; nothing is added.
* **Scans** (NIfTI/DICOM from this plugin's reader, or image layers of another NIfTI reader mapped
  through "Map image layers…") are segmented with their voxel spacing, as ``lggseg segment``
  does (thin slices resampled through-plane for the network); the prediction lies on the FLAIR's
  grid (its scale, translate and affine), so File ▸ Save writes ``<case>_mask.nii.gz``; the
  spacing fields show the scan's spacing (the volume in mL needs no typing) and the status says
  what the reader did (reoriented, resampled onto the FLAIR grid).
* **Shape**: the study's shape features of the mask on screen (:mod:`._shape_panel`), measured
  off the GUI thread after each edit.
* **Threshold and post-processing** re-threshold the cached probabilities without the network;
  reviewed slices keep their mask (a re-threshold never changes an edited slice, so it needs no
  undo); a prediction whose data was replaced outside napari's tools is left alone.
"""

from __future__ import annotations

import napari.viewer
from qtpy.QtWidgets import QWidget

from ..layer_meta import read_meta, unwrap_viewer
from ..review import reviewed_slices
from ..session import SegmentSession, scan_spacing, segment_input
from ._common import (
    refill_models,
    register_segment_widget,
    scrolling_body,
    status_label,
)
from ._forms import segment_form
from ._patient_choice import PatientChoice
from ._review_list import ReviewList
from ._runner import RunController, RunEvent
from ._shape_panel import ShapePanel


def _segment_job(inp, model, device, tta, threshold, postprocess, cache, spacing, state, emit):
    """Worker thread: :func:`napari_lggseg.session.segment_input`, its progress as RunEvents."""

    def send(ev):
        if not state.closed:
            emit(ev)

    return segment_input(
        inp,
        model,
        device,
        tta,
        threshold,
        postprocess,
        cache,
        cancel=state.cancel,
        on_stage=lambda text: send(RunEvent("stage", text)),
        on_progress=lambda i, n: send(RunEvent("progress", fraction=i / n)),
        spacing=spacing,
    )


def _fit_width(body: QWidget, form) -> None:
    """Let the dock body shrink to the width napari's default window gives a dock (350-400
    px at 1089 x 630), so a run never makes it scroll sideways: word-wrapped labels wrap at the
    width they get (magicgui's Label is fixed to its one-line width), and the spacing boxes drop
    napari's 70-px minimum text width (three of them beside "Spacing (mm)" set the width)."""
    from qtpy.QtWidgets import QLabel, QSizePolicy

    for label in body.findChildren(QLabel):
        if label.wordWrap():
            policy = label.sizePolicy()
            policy.setHorizontalPolicy(QSizePolicy.Policy.Preferred)
            label.setSizePolicy(policy)
    for axis in "zyx":
        box = form.spacing_row[f"spacing_{axis}"].native
        box.setStyleSheet("QAbstractSpinBox { min-width: 28px; padding: 1px 3px; }")


class SegmentWidget(QWidget):
    """Segment tumour: see the module docstring for how runs are bound and what they replace."""

    def __init__(self, viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        from ..warmup import for_segmentation

        for_segmentation()  # now, not in the first run's worker (see warmup.py)
        self.viewer = unwrap_viewer(viewer)
        self.session = SegmentSession(self.viewer)
        self.tracker = self.session.tracker
        self._segmenters: dict = {}  # (model, device) -> Segmenter, reused between runs
        self._run_choice = None  # the patient choice when Run was pressed
        self._run = None  # (RunInput, model) of the run in progress
        self._typed_spacing = None  # the person's spacing row, while a scan's is shown
        self.last_dice: float | None = None
        self.form = f = segment_form()
        self.patients = PatientChoice(f, self.viewer.layers)
        self.run_button, self.cancel_button = f.buttons.run, f.buttons.cancel
        self.runner = RunController(
            self.viewer,
            self,
            self.run_button,
            self.cancel_button,
            self._set_status,
            can_run=lambda: self.model_name is not None,
        )
        self.progress = self.runner.progress
        self.status, self.sequences_label = status_label("status"), status_label("sequences")
        self.volume_label, self.dice_label = status_label("volume"), status_label("dice")
        self.review = ReviewList(self.go_to_slice, self.mark_current_slice)
        self.shape = ShapePanel(self._review_target, lambda: self.spacing)
        body = scrolling_body(self)
        for w in (
            f.native,
            self.progress,
            self.status,
            self.sequences_label,
            self.volume_label,
            self.dice_label,
            self.shape,
            self.review,
        ):
            body.addWidget(w)
        body.addStretch(1)
        _fit_width(body.parentWidget(), f)
        self._connect_form()
        self.refresh_models()
        self._connect_viewer()
        register_segment_widget(self.viewer, self)
        self._refresh_patients()
        self._follow_active()

    def _connect_form(self) -> None:
        f = self.form
        f.patient.changed.connect(self._on_patient_changed)
        f.model_row.model.changed.connect(self._on_model_changed)
        f.model_row.refresh_models.changed.connect(lambda *_: self.refresh_models())
        f.threshold.changed.connect(lambda *_: self._rethreshold())
        f.postprocess.changed.connect(lambda *_: self._rethreshold())
        f.spacing_row.use_spacing.changed.connect(self._on_spacing_toggled)
        for axis in "zyx":
            f.spacing_row[f"spacing_{axis}"].changed.connect(lambda *_: self._update_stats())
        self.run_button.changed.connect(lambda *_: self.run())

    def _connect_viewer(self) -> None:
        layers, dims = self.viewer.layers, self.viewer.dims
        hooks = [
            (layers.events.inserted, self._on_layers_changed),
            (layers.events.removed, self._on_layers_changed),
            (layers.events.removed, self._on_layer_removed),
            (layers.selection.events.active, self._follow_active),
            (dims.events.current_step, self._update_reviewed_count),
        ]
        for emitter, callback in hooks:
            emitter.connect(callback)
        self.tracker.connect(self._on_review_changed)

        def disconnect():
            for emitter, callback in hooks:
                emitter.disconnect(callback)
            self.tracker.disconnect(self._on_review_changed)
            self.shape.close_panel()

        self.runner.on_close.append(disconnect)

    # ------------------------------------------------------------------ choices

    def refresh_models(self, select: str | None = None) -> None:
        """Re-read the model store; select ``select`` (a model name) if given."""
        combo = self.form.model_row.model
        before = combo.value
        refill_models(combo, select)
        if combo.value != before:
            self._on_model_changed()
        self.runner.refresh_buttons()

    def _on_model_changed(self, *_) -> None:
        """Take the threshold, post-processing and TTA the model's card chose on validation data
        (for the next run: the prediction on screen keeps its own)."""
        from ..model_cards import card_postprocessing
        from ..models import ModelError, get_model

        if not self.model_name:
            return
        try:
            post = card_postprocessing(get_model(self.model_name).card)
        except ModelError:
            return
        f = self.form
        with f.threshold.changed.blocked(), f.postprocess.changed.blocked():
            if post.threshold is not None:
                f.threshold.value = round(post.threshold, 2)
            if post.method in f.postprocess.choices:
                f.postprocess.value = post.method
            f.tta.value = post.tta

    def select_model(self, name: str) -> None:
        if name not in self.form.model_row.model.choices:
            self.refresh_models()
        if name not in self.form.model_row.model.choices:
            raise ValueError(f"model {name!r} is not in the store")
        self.form.model_row.model.value = name

    @property
    def model_name(self) -> str | None:
        return self.form.model_row.model.value

    @property
    def patient_id(self) -> str | None:
        return self.patients.patient_id

    def has_patient(self, patient_id: str) -> bool:
        return self.patients.has(patient_id)

    def set_patient(self, patient_id: str) -> None:
        self.patients.set(patient_id)

    @property
    def threshold(self) -> float:
        return round(float(self.form.threshold.value), 2)

    def set_threshold(self, value: float) -> None:
        self.form.threshold.value = value

    @property
    def postprocess(self) -> str:
        return self.form.postprocess.value

    @property
    def scan_spacing(self) -> tuple[float, ...] | None:
        """The chosen patient's voxel spacing from its scan (None for LGG slices)."""
        res = self.session.result(self.patient_id)
        if res is not None and (read_meta(res.layer) or {}).get("spacing"):
            return tuple(float(v) for v in read_meta(res.layer)["spacing"])
        return scan_spacing(self.patients.flair_layer())

    @property
    def spacing(self) -> tuple[float, float, float] | None:
        """The scan's voxel spacing, else the one typed in the form (if ticked)."""
        scan = self.scan_spacing
        if scan is not None and len(scan) == 3:
            return scan
        row = self.form.spacing_row
        if not row.use_spacing.value:
            return None
        return tuple(float(row[f"spacing_{a}"].value) for a in "zyx")

    def _refresh_patients(self) -> None:
        self.patients.refresh()
        self._on_patient_changed()

    def _on_patient_changed(self, *_) -> None:
        self.form.mapping.visible = self.patients.mapping_chosen
        self._show_spacing()
        res = self.session.result(self.patient_id)
        if res is not None:
            with self.form.threshold.changed.blocked():
                self.form.threshold.value = round(res.seg.threshold, 2)
        self._update_stats()
        self._update_reviewed_count()
        self._update_review_list()

    def _follow_active(self, *_) -> None:
        """Selecting any layer of a patient picks that patient (runs already started keep theirs)."""
        layer = self.viewer.layers.selection.active
        lgg = read_meta(layer) if layer is not None else None
        if lgg and self.has_patient(lgg["patient_id"]):
            self.set_patient(lgg["patient_id"])
        self.shape.schedule()  # the active mask is the one described

    def _on_layers_changed(self, *_) -> None:
        if not self.runner.closed:
            self._refresh_patients()

    def _on_layer_removed(self, event) -> None:
        self.session.forget(event.value)

    def _show_spacing(self) -> None:
        """A scan's spacing fills the spacing row, disabled (it comes from the file); an LGG
        patient gets back what the person typed."""
        row, scan = self.form.spacing_row, self.scan_spacing
        boxes = [row[f"spacing_{a}"] for a in "zyx"]
        widgets = [row.use_spacing, *boxes]
        if scan is not None and len(scan) == 3:
            if self._typed_spacing is None:
                self._typed_spacing = [w.value for w in widgets]
            values = [True, *(round(v, 3) for v in scan)]
            enabled, tip = False, "From the scan's header"
        elif self._typed_spacing is not None:
            values, self._typed_spacing = self._typed_spacing, None
            enabled, tip = True, "Give the tumour volume in mL too"
        else:
            return
        for w, v in zip(widgets, values, strict=True):
            with w.changed.blocked():
                w.value = v
        row.use_spacing.enabled, row.use_spacing.tooltip = enabled, tip
        for box in boxes:
            box.enabled = enabled and bool(row.use_spacing.value)

    def _on_spacing_toggled(self, on: bool) -> None:
        for axis in "zyx":
            self.form.spacing_row[f"spacing_{axis}"].enabled = on
        self._update_stats()

    # ------------------------------------------------------------------ running

    @property
    def is_running(self) -> bool:
        return self.runner.is_running

    def run(self) -> bool:
        """Start segmenting the chosen patient; False (with the reason in the status line) if it
        cannot start."""
        if self.runner.is_running:
            return False
        model = self.model_name
        if model is None:
            self._set_status(
                "No model in the store: the package's weights are missing (see README)."
            )
            return False
        try:
            inp = self.patients.capture()
        except ValueError as exc:
            self._set_status(str(exc))
            return False
        spacing = scan_spacing(inp.source() if inp.source is not None else None)
        if spacing is not None and not inp.meta.get("spacing"):
            inp.meta["spacing"] = list(spacing)  # another reader's scale: the prediction keeps it
        self._run_choice, self._run = self.form.patient.value, (inp, model)
        return self.runner.start(
            _segment_job,
            inp,
            model,
            self.form.device.value,
            bool(self.form.tta.value),
            self.threshold,
            self.postprocess,
            self._segmenters,
            spacing,
            description=f"segmenting {inp.patient_id}",
            on_returned=self._on_returned,
            failure="Segmentation failed",
            cancel_note="Cancelling (stops after the current batch)…",
            status=f"Starting: {inp.patient_id} with {model}…",
        )

    def cancel(self) -> None:
        self.runner.cancel()

    def _on_returned(self, outcome) -> None:
        inp, model = self._run
        if outcome is None:
            self._set_status(f"Cancelled: nothing was added for {inp.patient_id}.")
            return
        placed = self.session.place(inp, outcome, model)
        pid, seg = inp.patient_id, outcome.seg
        # show the result, unless the person picked another patient meanwhile
        if self.form.patient.value in (self._run_choice, None) and self.has_patient(pid):
            self.set_patient(pid)
        notes = [*(inp.meta.get("notes") or []), *outcome.notes]
        self.sequences_label.setText(
            f"Sequences: {seg.sequences_note}" + "".join(f"; {n}" for n in notes)
        )
        self._set_status(
            f"{pid}: {model} on {seg.device} in {seg.seconds:.1f} s; "
            + "; ".join(placed.notes)
            + "."
        )
        self._on_patient_changed()

    # ------------------------------------------------------------------ results

    def prediction_layers(self, patient_id: str) -> list:
        return self.session.prediction_layers(patient_id)

    def result_layer(self, patient_id: str | None = None):
        """The layer the last run for ``patient_id`` (default: the chosen patient) went to."""
        res = self.session.result(patient_id or self.patient_id)
        return res.layer if res else None

    def review_slices(self, patient_id: str | None = None) -> list[tuple[int, float]]:
        """The slices to check first for the last run on ``patient_id`` (default: the chosen
        patient): (0-based index, uncertain voxels), most uncertain first."""
        res = self.session.result(patient_id or self.patient_id)
        return list(res.review) if res else []

    def _rethreshold(self) -> None:
        message = self.session.rethreshold(self.patient_id, self.threshold, self.postprocess)
        if message is not None:
            self._set_status(message)
            self._update_stats()

    def _update_stats(self) -> None:
        m = self.session.measure(self.patient_id, self.spacing)
        self.last_dice = m.dice if m else None
        self.volume_label.setText(m.volume_text() if m else "")
        self.dice_label.setText(m.dice_text() if m else "")
        self.shape.schedule()

    # ------------------------------------------------------------------ review

    def _review_target(self):
        return self.session.review_target(self.viewer.layers.selection.active, self.patient_id)

    def current_slice(self, layer) -> int:
        point = layer.world_to_data(self.viewer.dims.point[-layer.ndim :])
        return int(round(float(point[0])))

    def mark_current_slice(self) -> list[int]:
        """Mark the slice on screen reviewed in the active mask (or the patient's prediction)."""
        layer = self._review_target()
        if layer is None:
            self._set_status("Nothing to mark: segment a patient or select its mask layer first.")
            return []
        z = self.current_slice(layer)
        new = self.tracker.mark(layer, [z])
        self._set_status(
            f"Slice {z} of '{layer.name}' "
            + ("marked reviewed." if new else "was already reviewed.")
        )
        self._update_reviewed_count()
        return new

    def _on_review_changed(self, layer) -> None:
        if self.runner.closed:
            return
        self.session.changed()  # the mask or the ground truth changed
        self._update_reviewed_count()
        self._update_review_list()
        self._update_stats()

    def _update_reviewed_count(self, *_) -> None:
        layer = self._review_target()
        if layer is None:
            self.review.show_count(None, [], False)
            return
        rs = reviewed_slices(layer)
        self.review.show_count(layer.name, rs, self.current_slice(layer) in rs)

    def _update_review_list(self) -> None:
        res = self.session.result(self.patient_id)
        self.review.show_result(res, set(reviewed_slices(res.layer)) if res else set())

    def go_to_slice(self, z: int) -> None:
        """Show slice ``z`` (0-based) of the chosen patient's prediction, whatever its scale."""
        layer = self.result_layer()
        if layer is None or self.viewer.dims.ndim < layer.ndim:
            self.viewer.dims.set_current_step(0, z)
            return
        world = layer.data_to_world([z] + [0] * (layer.ndim - 1))
        self.viewer.dims.set_point(self.viewer.dims.ndim - layer.ndim, float(world[0]))

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
