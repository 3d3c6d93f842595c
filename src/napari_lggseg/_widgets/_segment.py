"""The Segment tumour widget: patient + model + device + options -> a "<patient> prediction" layer.

How a run behaves, in the order a person meets it:

* **Bound at Run.** The patient's arrays, id, folder and scale are captured when Run is pressed
  (:func:`._patients.capture`); the worker never reads the viewer's selection. Selecting or
  opening other layers during the run changes nothing; if the person picked another patient
  meanwhile, the widget stays on that one (their next Run is for it), and the status line names
  the patient the result went to.
* **Layers closed mid-run.** If the patient's image layers are removed while it runs, the
  prediction is still added (it was computed from the arrays captured at Run, and is named and
  tagged with the patient) and the status line says that the images were closed.
* **Never overwrites your work.** A prediction layer for the patient that nobody has edited or
  reviewed is updated in place. One with edits or reviewed slices is kept, and the new result
  goes into a new layer with a versioned name ("<patient> prediction 2"). No dialog: the run can
  end while the person is painting, and a modal question would interrupt them.
* **Cancel** stops the network within a batch; nothing is added, the viewer is as it was.
* **Threshold and post-processing** re-threshold the cached probabilities without the network.
  Slices the person has reviewed keep their mask; a prediction whose data was replaced outside
  napari's tools is left alone (run again for a new version).
* **Check these slices first.** After a run, the slices where the model is least sure
  (:func:`napari_lggseg.uncertainty.slices_to_review`, computed in the worker from the
  probabilities) are listed, most uncertain first; clicking one moves the viewer there, and a
  slice gets a check mark once it is reviewed. The list belongs to the run's patient (choosing
  another patient shows that one's list, if it has one) and changes only with a new run: it
  depends on the probabilities, not on the threshold.

Reviewed slices (napari's paint tools, "Mark slice reviewed") are tracked by
:mod:`napari_lggseg.review` in ``metadata["lggseg"]["reviewed_slices"]``; the writer saves them.
"""

from __future__ import annotations

import napari.layers
import napari.viewer
import numpy as np
from napari.qt.threading import create_worker
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..layer_meta import MASK_ROLES as TRACKED_ROLES
from ..layer_meta import read_meta as lgg_meta
from ..patients import capture, capture_mapping, find_patients, image_layers
from ..review import is_touched, reviewed_slices, tracker_for
from ._common import (
    Life,
    Progress,
    Relay,
    RunState,
    fill_device_combo,
    fill_model_combo,
    finish_task,
    real_viewer,
    register_segment_widget,
    register_task,
)

MAP_LAYERS = "__map__"
REVIEWED_MARK = "✓"
POSTPROCESS = (
    ("drop small components", "min-size"),
    ("largest component", "largest"),
    ("none", "none"),
)


def _segment_job(inp, model_name, device, tta, threshold, postprocess, cache, state, emit):
    """Runs in the worker thread: load (or reuse) the model, segment, and measure the mask and
    rank the slices to review here rather than on the GUI thread. Returns (Segmentation,
    {"voxels", "dice", "review"}), or None when cancelled. Touches no Qt object except through
    ``emit``."""
    from ..inference import Cancelled, Segmenter
    from ..metrics import dice
    from ..uncertainty import slices_to_review

    def send(ev):
        if not state.closed:
            emit(ev)

    key = (model_name, device)
    segmenter = cache.get(key)
    if segmenter is None:
        send(("stage", f"loading model {model_name} on {device}"))
        segmenter = Segmenter.from_store(model_name, device)
        cache[key] = segmenter
    segmenter.tta = tta
    volume = inp.volume()
    send(("stage", f"segmenting {inp.patient_id} with {segmenter.name} on {segmenter.device}"))
    try:
        seg = segmenter.segment(
            volume,
            threshold,
            postprocess,
            cancel=state.cancel,
            progress=lambda i, n: send(("progress", i, n)),
        )
    except Cancelled:
        return None
    if state.cancel.is_set():
        return None
    mask = seg.mask > 0
    stats = {
        "voxels": int(mask.sum()),
        "dice": dice(mask, inp.truth > 0)
        if inp.truth is not None and inp.truth.shape == mask.shape
        else None,
        "review": slices_to_review(seg.prob),
    }
    return seg, stats


class _Result:
    """A finished run: the layer it went to, its probabilities (for re-thresholding) and the
    slices to check first, as (0-based index, uncertain voxels), most uncertain first."""

    def __init__(self, layer, seg, inp, review):
        self.layer, self.seg, self.inp, self.review = layer, seg, inp, list(review)


class SegmentWidget(QWidget):
    """Segment tumour: see the module docstring for how runs are bound and what they replace."""

    def __init__(self, viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        from ..warmup import for_segmentation

        for_segmentation()  # now, not in the first run's worker (see warmup.py)
        self.viewer = real_viewer(viewer)
        self.tracker = tracker_for(self.viewer)
        self._segmenters: dict = {}  # (model, device) -> Segmenter, reused between runs
        self._results: dict[str, _Result] = {}  # patient id -> its latest run
        self._worker = None
        self._placed = False
        self._run_choice = None
        self._run_input = None
        self._run_model = None
        self._task = None
        self.last_dice: float | None = None
        self._fresh_stats = None  # (layer, stats) the worker measured for the mask it produced
        self._life = Life()
        self.destroyed.connect(self._life.close)
        self._build()
        self._connect_viewer()
        self._life.on_close.append(self._disconnect_viewer)
        register_segment_widget(self.viewer, self)
        self._refresh_patients()
        self._follow_active()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        layout.addLayout(form)

        self.patient_combo = QComboBox(objectName="patient")
        self.patient_combo.setToolTip(
            "The patient to segment; selecting any of its layers picks it"
        )
        self.patient_combo.currentIndexChanged.connect(self._on_patient_changed)
        form.addRow("Patient", self.patient_combo)

        self.mapping = QWidget()
        mform = QFormLayout(self.mapping)
        mform.setContentsMargins(0, 0, 0, 0)
        self.flair_combo, self.pre_combo, self.post_combo = QComboBox(), QComboBox(), QComboBox()
        mform.addRow("FLAIR", self.flair_combo)
        mform.addRow("pre-contrast", self.pre_combo)
        mform.addRow("post-contrast", self.post_combo)
        self.mapping.setVisible(False)
        form.addRow(self.mapping)

        row = QHBoxLayout()
        self.model_combo = QComboBox(objectName="model")
        self.model_combo.setToolTip(
            "Models in the store, with the Dice they reached on their validation patients"
        )
        refresh = QToolButton(text="↻", toolTip="Re-read the model store")
        refresh.clicked.connect(lambda: self.refresh_models())
        row.addWidget(self.model_combo, 1)
        row.addWidget(refresh)
        form.addRow("Model", row)
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)

        self.device_combo = QComboBox(objectName="device")
        fill_device_combo(self.device_combo)
        form.addRow("Device", self.device_combo)

        row = QHBoxLayout()
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal, objectName="threshold")
        self.threshold_slider.setRange(1, 99)
        self.threshold_slider.setValue(50)
        self.threshold_slider.setTracking(
            False
        )  # re-threshold on release, the label follows the drag
        self.threshold_label = QLabel("0.50")
        self.threshold_slider.sliderMoved.connect(
            lambda v: self.threshold_label.setText(f"{v / 100:.2f}")
        )
        self.threshold_slider.valueChanged.connect(self._on_threshold)
        row.addWidget(self.threshold_slider, 1)
        row.addWidget(self.threshold_label)
        form.addRow("Threshold", row)

        self.post_combo_pp = QComboBox(objectName="postprocess")
        for label, key in POSTPROCESS:
            self.post_combo_pp.addItem(label, key)
        self.post_combo_pp.currentIndexChanged.connect(lambda _: self._rethreshold())
        form.addRow("Post-processing", self.post_combo_pp)

        self.tta_check = QCheckBox("flip test-time augmentation (slower, takes effect on Run)")
        form.addRow(self.tta_check)

        row = QHBoxLayout()
        self.spacing_check = QCheckBox("voxel spacing (mm) z, y, x")
        self.spacing = [
            QDoubleSpinBox(decimals=3, minimum=0.001, maximum=100.0, value=v)
            for v in (1.0, 1.0, 1.0)
        ]
        row.addWidget(self.spacing_check)
        for box in self.spacing:
            box.setEnabled(False)
            box.valueChanged.connect(lambda _: self._update_stats())
            row.addWidget(box)
        self.spacing_check.toggled.connect(self._on_spacing_toggled)
        form.addRow(row)

        row = QHBoxLayout()
        self.run_button = QPushButton("Run", objectName="run")
        self.cancel_button = QPushButton("Cancel", objectName="cancel", enabled=False)
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)

        self.progress = Progress(objectName="progress")
        layout.addWidget(self.progress)

        self.status = QLabel("", objectName="status", wordWrap=True)
        self.sequences_label = QLabel("", wordWrap=True)
        self.volume_label = QLabel("", objectName="volume")
        self.dice_label = QLabel("", objectName="dice")
        for w in (self.status, self.sequences_label, self.volume_label, self.dice_label):
            w.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            layout.addWidget(w)

        self.review_heading = QLabel("", objectName="review_heading", wordWrap=True)
        self.review_list = QListWidget(objectName="review_list")
        self.review_list.setToolTip(
            "Slices where the model is least sure, most uncertain first: the expected "
            "number of wrong voxels if its probabilities are calibrated. Click to go there."
        )
        self.review_list.setMaximumHeight(150)
        self.review_list.itemClicked.connect(self._on_review_item)
        self.review_list.itemActivated.connect(self._on_review_item)
        self._review_shown = None  # the _Result whose slices the list shows
        for w in (self.review_heading, self.review_list):
            w.setVisible(False)
            layout.addWidget(w)

        row = QHBoxLayout()
        self.review_button = QPushButton("Mark slice reviewed", objectName="mark_reviewed")
        self.review_button.setToolTip(
            "The mask on this slice is right as it is: learn from it when fine-tuning"
        )
        self.review_button.clicked.connect(self.mark_current_slice)
        self.reviewed_label = QLabel("")
        row.addWidget(self.review_button)
        row.addWidget(self.reviewed_label, 1)
        layout.addLayout(row)
        layout.addStretch(1)
        self.refresh_models()

    def _connect_viewer(self) -> None:
        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layers_changed)
        layers.events.removed.connect(self._on_layers_changed)
        layers.events.removed.connect(self._on_layer_removed)
        layers.selection.events.active.connect(self._follow_active)
        self.tracker.connect(self._on_review_changed)
        self.viewer.dims.events.current_step.connect(self._update_reviewed_label)

    def _disconnect_viewer(self) -> None:
        layers = self.viewer.layers
        for emitter, cb in (
            (layers.events.inserted, self._on_layers_changed),
            (layers.events.removed, self._on_layers_changed),
            (layers.events.removed, self._on_layer_removed),
            (layers.selection.events.active, self._follow_active),
            (self.viewer.dims.events.current_step, self._update_reviewed_label),
        ):
            emitter.disconnect(cb)
        self.tracker.disconnect(self._on_review_changed)

    # ------------------------------------------------------------------ choices

    def refresh_models(self, select: str | None = None) -> None:
        """Re-read the model store; select ``select`` (a model name) if given."""
        before = self.model_combo.currentData()
        fill_model_combo(self.model_combo, select)
        if self.model_combo.currentData() != before:
            self._on_model_changed()
        self.run_button.setEnabled(
            self._worker is None and self.model_combo.currentData() is not None
        )

    def _on_model_changed(self, *_) -> None:
        """Take the threshold, post-processing and TTA the model's card chose on validation data
        (for the next run: the prediction on screen keeps its own)."""
        from ..models import ModelError, get_model

        name = self.model_name
        if not name:
            return
        try:
            post = get_model(name).card.get("postprocessing", {})
        except ModelError:
            return
        for w in (self.threshold_slider, self.post_combo_pp, self.tta_check):
            w.blockSignals(True)
        if post.get("threshold") is not None:
            self.threshold_slider.setValue(int(round(float(post["threshold"]) * 100)))
            self.threshold_label.setText(f"{self.threshold:.2f}")
        i = self.post_combo_pp.findData(post.get("method"))
        if i >= 0:
            self.post_combo_pp.setCurrentIndex(i)
        self.tta_check.setChecked(bool(post.get("tta", False)))
        for w in (self.threshold_slider, self.post_combo_pp, self.tta_check):
            w.blockSignals(False)

    def select_model(self, name: str) -> None:
        if self.model_combo.findData(name) < 0:
            self.refresh_models()
        i = self.model_combo.findData(name)
        if i < 0:
            raise ValueError(f"model {name!r} is not in the store")
        self.model_combo.setCurrentIndex(i)

    @property
    def model_name(self) -> str | None:
        return self.model_combo.currentData()

    @property
    def patient_id(self) -> str | None:
        data = self.patient_combo.currentData()
        if data == MAP_LAYERS:
            name = self.flair_combo.currentText()
            return self._mapped_id(name) if name else None
        return data

    def _mapped_id(self, name: str) -> str:
        layer = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401 (LayerList)
        lgg = lgg_meta(layer) if layer is not None else None
        return lgg["patient_id"] if lgg else name

    def set_patient(self, patient_id: str) -> None:
        i = self.patient_combo.findData(patient_id)
        if i < 0:
            raise ValueError(f"patient {patient_id!r} has no open layers")
        self.patient_combo.setCurrentIndex(i)

    @property
    def threshold(self) -> float:
        return self.threshold_slider.value() / 100

    def set_threshold(self, value: float) -> None:
        self.threshold_slider.setValue(int(round(value * 100)))

    @property
    def postprocess(self) -> str:
        return self.post_combo_pp.currentData()

    def _refresh_patients(self) -> None:
        current = self.patient_combo.currentData()
        patients = find_patients(self.viewer.layers)
        self.patient_combo.blockSignals(True)
        self.patient_combo.clear()
        for pid, p in patients.items():
            if p.flair is not None:
                self.patient_combo.addItem(pid, pid)
        self.patient_combo.addItem("Map image layers…", MAP_LAYERS)
        i = self.patient_combo.findData(current)
        self.patient_combo.setCurrentIndex(i if i >= 0 else 0)
        self.patient_combo.blockSignals(False)
        self._refresh_mapping()
        self._on_patient_changed()

    def _refresh_mapping(self) -> None:
        names = [lyr.name for lyr in image_layers(self.viewer.layers)]
        for combo, optional in (
            (self.flair_combo, False),
            (self.pre_combo, True),
            (self.post_combo, True),
        ):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            if optional:
                combo.addItem("(none: use FLAIR)")
            combo.addItems(names)
            i = combo.findText(current)
            combo.setCurrentIndex(i if i >= 0 else 0)
            combo.blockSignals(False)

    def _on_patient_changed(self, *_) -> None:
        self.mapping.setVisible(self.patient_combo.currentData() == MAP_LAYERS)
        res = self._result()
        if res is not None:
            self.threshold_slider.blockSignals(True)
            self.threshold_slider.setValue(int(round(res.seg.threshold * 100)))
            self.threshold_slider.blockSignals(False)
            self.threshold_label.setText(f"{res.seg.threshold:.2f}")
        self._update_stats()
        self._update_reviewed_label()
        self._update_review_list()

    def _follow_active(self, *_) -> None:
        """Selecting any layer of a patient picks that patient (runs already started keep theirs)."""
        layer = self.viewer.layers.selection.active
        lgg = lgg_meta(layer) if layer is not None else None
        if lgg and self.patient_combo.findData(lgg["patient_id"]) >= 0:
            self.set_patient(lgg["patient_id"])

    def _on_layers_changed(self, *_) -> None:
        if not self._life.closed:
            self._refresh_patients()

    def _on_layer_removed(self, event) -> None:
        for pid, res in list(self._results.items()):
            if res.layer is event.value:
                del self._results[pid]

    def _on_spacing_toggled(self, on: bool) -> None:
        for box in self.spacing:
            box.setEnabled(on)
        self._update_stats()

    # ------------------------------------------------------------------ running

    @property
    def is_running(self) -> bool:
        return self._worker is not None

    def _capture(self):
        if self.patient_combo.currentData() == MAP_LAYERS:
            layers = self.viewer.layers

            def pick(combo):
                name = combo.currentText()
                return layers[name] if name in layers else None  # noqa: SIM401 (LayerList)

            flair = pick(self.flair_combo)
            truth = (
                find_patients(layers).get(self._mapped_id(flair.name))
                if flair is not None
                else None
            )
            return capture_mapping(
                flair,
                pick(self.pre_combo),
                pick(self.post_combo),
                truth.ground_truth if truth else None,
            )
        pid = self.patient_combo.currentData()
        patient = find_patients(self.viewer.layers).get(pid)
        if patient is None:
            raise ValueError(
                "no patient is open: open a patient folder or File ▸ Open Sample, "
                "or map image layers to FLAIR / pre / post-contrast"
            )
        return capture(patient)

    def run(self) -> bool:
        """Start segmenting the chosen patient; False (with the reason in the status line) if it
        cannot start."""
        if self._worker is not None:
            return False
        model = self.model_name
        if model is None:
            self._set_status(
                "No model in the store: the package's weights are missing (see README)."
            )
            return False
        try:
            inp = self._capture()
        except ValueError as exc:
            self._set_status(str(exc))
            return False
        state = RunState()
        relay = Relay()
        relay.event.connect(self._on_event)
        device = self.device_combo.currentData()
        worker = create_worker(
            _segment_job,
            inp,
            model,
            device,
            self.tta_check.isChecked(),
            self.threshold,
            self.postprocess,
            self._segmenters,
            state,
            relay.event.emit,
            _start_thread=False,
        )
        worker._lggseg_relay = relay  # lives as long as the worker, not the widget
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker, self._run_input, self._run_model = worker, inp, model
        self._run_choice = self.patient_combo.currentData()
        self._placed = False
        self._life.state = state
        self._task = register_task(self.viewer, f"segmenting {inp.patient_id}", state)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.set_fraction(0.0, force=True)
        self._set_status(f"Starting: {inp.patient_id} with {model}…")
        worker.start()
        return True

    def cancel(self) -> None:
        if self._life.state is not None and self._worker is not None:
            self._life.state.cancel.set()
            self.cancel_button.setEnabled(False)
            self._set_status("Cancelling (stops after the current batch)…")

    def _on_event(self, ev) -> None:
        if self._life.closed:
            return
        if ev[0] == "progress":
            _, i, n = ev
            self.progress.set_fraction(i / n, force=i == n)
        elif ev[0] == "stage" and not (self._life.state and self._life.state.cancel.is_set()):
            self._set_status(ev[1][:1].upper() + ev[1][1:] + "…")

    def _on_returned(self, out) -> None:
        if self._life.closed:
            return
        inp = self._run_input
        self._placed = out is not None
        if out is None:
            self._set_status(f"Cancelled: nothing was added for {inp.patient_id}.")
            return
        self._place(inp, *out, model=self._run_model)

    def _on_errored(self, exc) -> None:
        if not self._life.closed:
            self._set_status(f"Segmentation failed: {exc}")

    def _on_finished(self) -> None:
        state = self._life.state
        finish_task(
            self.viewer, self._task, "CANCELLED" if state and state.cancel.is_set() else "COMPLETED"
        )
        self._worker, self._task = None, None
        self._life.state = None
        if self._life.closed:
            return
        self.cancel_button.setEnabled(False)
        self.run_button.setEnabled(self.model_name is not None)
        self.progress.set_fraction(float(self._placed), force=True)

    # ------------------------------------------------------------------ results

    def prediction_layers(self, patient_id: str) -> list:
        return [
            lyr
            for lyr in self.viewer.layers
            if (m := lgg_meta(lyr))
            and m.get("role") == "prediction"
            and m["patient_id"] == patient_id
        ]

    def result_layer(self, patient_id: str | None = None):
        """The layer the last run for ``patient_id`` (default: the chosen patient) went to."""
        res = self._result(patient_id)
        return res.layer if res else None

    def _result(self, patient_id: str | None = None) -> _Result | None:
        res = self._results.get(patient_id or self.patient_id or "")
        if res is not None and res.layer not in self.viewer.layers:
            return None
        return res

    def _free_name(self, base: str) -> str:
        names = {lyr.name for lyr in self.viewer.layers}
        if base not in names:
            return base
        k = 2
        while f"{base} {k}" in names:
            k += 1
        return f"{base} {k}"

    def _place(self, inp, seg, stats: dict, model: str = "") -> None:
        """Put a finished run into the viewer, on the patient it was started for."""
        pid = inp.patient_id
        mask = np.asarray(seg.mask, dtype=np.uint8).copy()
        notes = []
        reuse = [
            lyr
            for lyr in self.prediction_layers(pid)
            if not is_touched(lyr) and lyr.data.shape == mask.shape
        ]
        if reuse:
            layer = reuse[-1]
            with self.tracker.programmatic(layer):
                layer.data = mask
            layer.metadata["lggseg"].update(model=model, reviewed_slices=[], edited=False)
            notes.append(f"updated '{layer.name}'")
        else:
            kept = [lyr.name for lyr in self.prediction_layers(pid)]
            meta = {
                "patient_id": pid,
                "folder": inp.folder,
                "slice_files": list(inp.slice_files),
                "role": "prediction",
                "model": model,
                "reviewed_slices": [],
            }
            selection = self.viewer.layers.selection
            active, chosen = selection.active, set(selection)
            layer = self.viewer.add_labels(
                mask,
                name=self._free_name(f"{pid} prediction"),
                metadata={"lggseg": meta},
                scale=inp.scale,
                translate=inp.translate,
                opacity=0.6,
            )
            if active is not None and (lgg_meta(active) or {}).get("patient_id") != pid:
                # the person is working on another patient: a finished run must not take their layer away
                selection.clear()
                selection.update(chosen)
                selection.active = active
            notes.append(
                f"added '{layer.name}'" + (f"; kept your edited '{kept[-1]}'" if kept else "")
            )
        patient = find_patients(self.viewer.layers).get(pid)
        if patient is None or patient.flair is None:
            notes.append(
                f"{pid}'s images were closed during the run, the prediction was added anyway"
            )
        self._results[pid] = _Result(layer, seg, inp, stats["review"])
        self._fresh_stats = (layer, stats) if stats else None
        # show the result, unless the person picked another patient meanwhile (their next Run is for that one)
        if (
            self.patient_combo.currentData() in (self._run_choice, None)
            and self.patient_combo.findData(pid) >= 0
        ):
            self.set_patient(pid)
        self.sequences_label.setText(f"Sequences: {seg.sequences_note}")
        self._set_status(
            f"{pid}: {model} on {seg.device} in {seg.seconds:.1f} s; " + "; ".join(notes) + "."
        )
        self._on_patient_changed()

    def _on_threshold(self, value: int) -> None:
        self.threshold_label.setText(f"{value / 100:.2f}")
        self._rethreshold()

    def _rethreshold(self) -> None:
        """New mask from the cached probabilities; reviewed slices keep what the person made."""
        res = self._result()
        if res is None:
            return
        layer = res.layer
        lgg = lgg_meta(layer)
        keep = reviewed_slices(layer)
        if lgg.get("edited") and not keep:
            self._set_status(
                f"'{layer.name}' was changed outside napari's tools: not re-thresholded. "
                "Run again for a new version."
            )
            return
        mask = res.seg.rethreshold(self.threshold, self.postprocess).astype(np.uint8)
        if keep:
            mask[keep] = np.asarray(layer.data)[keep]
        with self.tracker.programmatic(layer):
            layer.data = mask
        self._fresh_stats = None
        kept = f"; your {len(keep)} reviewed slice(s) kept" if keep else ""
        self._set_status(
            f"'{layer.name}': threshold {self.threshold:.2f}, {self.post_combo_pp.currentText()}{kept}."
        )
        self._update_stats()

    # ------------------------------------------------------------------ measurements and review

    def _update_stats(self) -> None:
        from ..metrics import dice, tumour_volume

        res = self._result()
        if res is None:
            self.volume_label.setText("")
            self.dice_label.setText("")
            return
        spacing = tuple(b.value() for b in self.spacing) if self.spacing_check.isChecked() else None
        fresh = self._fresh_stats
        if (
            fresh is not None and fresh[0] is res.layer
        ):  # measured by the worker: nothing changed since
            voxels, self.last_dice = fresh[1]["voxels"], fresh[1]["dice"]
        else:
            self._fresh_stats = None
            mask = np.asarray(res.layer.data) > 0
            voxels = tumour_volume(mask)["voxels"]
            patient = find_patients(self.viewer.layers).get(res.inp.patient_id)
            truth = patient.ground_truth if patient else None
            truth = np.asarray(truth.data) if truth is not None else res.inp.truth
            self.last_dice = (
                dice(mask, truth > 0) if truth is not None and truth.shape == mask.shape else None
            )
        text = f"Tumour volume: {voxels:,} voxels"
        if spacing is not None:
            text += f" = {voxels * float(np.prod(spacing)) / 1000:.2f} mL"
        self.volume_label.setText(text)
        self.dice_label.setText(
            "" if self.last_dice is None else f"Dice against the ground truth: {self.last_dice:.3f}"
        )

    def _review_target(self):
        layer = self.viewer.layers.selection.active
        if (
            isinstance(layer, napari.layers.Labels)
            and (lgg_meta(layer) or {}).get("role") in TRACKED_ROLES
        ):
            return layer
        res = self._result()
        if res is not None:
            return res.layer
        preds = self.prediction_layers(self.patient_id) if self.patient_id else []
        return preds[-1] if preds else None

    def current_slice(self, layer) -> int:
        point = layer.world_to_data(self.viewer.dims.point[-layer.ndim :])
        return int(round(float(point[0])))

    def mark_current_slice(self) -> list[int]:
        """Mark the slice on screen as reviewed in the active mask (or the chosen patient's
        prediction)."""
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
        self._update_reviewed_label()
        return new

    def _on_review_changed(self, layer) -> None:
        if self._life.closed:
            return
        self._update_reviewed_label()
        self._update_review_list()
        self._fresh_stats = None  # the mask or the ground truth changed
        self._update_stats()

    def _update_reviewed_label(self, *_) -> None:
        layer = self._review_target()
        if layer is None:
            self.reviewed_label.setText("")
            return
        rs = reviewed_slices(layer)
        here = self.current_slice(layer) in rs
        self.reviewed_label.setText(
            f"{len(rs)} reviewed slice(s) in '{layer.name}'" + ("; this one is" if here else "")
        )

    # ------------------------------------------------------------------ slices to check first

    def _update_review_list(self) -> None:
        """Show the chosen patient's slices to check first (or nothing); rebuilt only for another
        run, otherwise just the check marks follow the reviewed slices."""
        res = self._result()
        if res is None:
            self._review_shown = None
            self.review_list.clear()
            for w in (self.review_heading, self.review_list):
                w.setVisible(False)
            return
        if res is not self._review_shown:
            self._review_shown = res
            self.review_list.clear()
            for z, _score in res.review:
                item = QListWidgetItem()
                item.setData(Qt.ItemDataRole.UserRole, z)
                self.review_list.addItem(item)
            self.review_heading.setText(
                "Check these slices first (most uncertain first; click one to go there):"
                if res.review
                else "Check these slices first: none, the model is sure on every slice."
            )
            self.review_heading.setVisible(True)
            self.review_list.setVisible(bool(res.review))
        done = set(reviewed_slices(res.layer))
        files = res.inp.slice_files
        for row, (z, score) in enumerate(res.review):
            item = self.review_list.item(row)
            name = f" (file {files[z]})" if z < len(files) else ""
            mark = f"{REVIEWED_MARK} " if z in done else ""
            item.setText(f"{mark}slice {z}{name}: ~{score:.0f} uncertain voxels")
            item.setToolTip(
                f"slice {z} in the viewer{name}; "
                + ("reviewed" if z in done else "not reviewed yet")
            )

    def review_slices(self, patient_id: str | None = None) -> list[tuple[int, float]]:
        """The slices to check first for the last run on ``patient_id`` (default: the chosen
        patient): (0-based index, uncertain voxels), most uncertain first."""
        res = self._result(patient_id)
        return list(res.review) if res else []

    def _on_review_item(self, item) -> None:
        z = item.data(Qt.ItemDataRole.UserRole)
        if z is not None:
            self.go_to_slice(int(z))

    def go_to_slice(self, z: int) -> None:
        """Show slice ``z`` (0-based) of the chosen patient's prediction, whatever its scale."""
        res = self._result()
        layer = res.layer if res is not None else None
        if layer is None or self.viewer.dims.ndim < layer.ndim:
            self.viewer.dims.set_current_step(0, z)
            return
        axis = self.viewer.dims.ndim - layer.ndim
        world = layer.data_to_world([z] + [0] * (layer.ndim - 1))
        self.viewer.dims.set_point(axis, float(world[0]))

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
