"""The Fine-tune widget: learn from the slices people reviewed, save a new model, use it.

* **What it learns from**: every open LGG mask with reviewed slices (a prediction someone
  corrected, a corrections folder, an edited ground truth), one checkbox each with its count.
  Only the reviewed slices are trusted; the rest of the volume is not used for the loss.
* **Validation**: the ground truth of open patients that are not being trained on; when there
  is none, the reviewed slices themselves, and the plot says "Dice on corrected slices".
* **Budget**: by default one round (:func:`napari_lggseg.finetune.default_config`, the round
  ``benchmarks/bench_finetune_round.py`` measures); or a number of rounds, epochs or minutes.
* **Cancel** stops at the next step and saves nothing. Closing the viewer mid-run cancels the
  same way (through napari's task status, or when Qt destroys the widget); the worker then sends
  nothing more to Qt. The store writes a model atomically (staging folder, then rename), so no
  partial model can appear.
* **On finish** the model is saved under a new, never reused name, selected in the Segment
  tumour widget, and "Segment with new model" re-segments the patient in one click.
"""

from __future__ import annotations

import re

import napari.viewer
import numpy as np
from napari.qt.threading import create_worker
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..layer_meta import PLUGIN
from ..layer_meta import read_meta as lgg_meta
from ..patients import capture, find_patients, training_candidates
from ..review import tracker_for
from ._common import (
    Life,
    Progress,
    Relay,
    RunState,
    fill_device_combo,
    fill_model_combo,
    finish_task,
    real_viewer,
    register_task,
    segment_widget_for,
)
from ._plot import EpochPlot

UNITS = ("rounds", "epochs", "minutes")
CORRECTED_LABEL = "Dice on corrected slices"


def _finetune_job(train_vols, val_vols, validation, base, name, cfg, state, emit):
    """Runs in the worker thread: one fine-tuning run from ``base`` through the same core as the
    CLI (:func:`napari_lggseg.finetune.fine_tune`), saved as ``name`` (made unique). Returns
    (ModelInfo, TrainResult), or None when cancelled (by Cancel or by the viewer closing)."""
    from ..finetune import fine_tune

    def send(ev):
        if not state.closed:
            emit(ev)

    send(
        {
            "kind": "stage",
            "text": f"fine-tuning {base} on {', '.join(v.patient_id for v in train_vols)}",
        }
    )
    corrected = {v.patient_id: int(np.count_nonzero(v.labelled)) for v in train_vols}
    extra = {
        "validation": validation,
        "corrected_slices": corrected,
        "intended_use": "research segmentation of LGG FLAIR abnormality, fine-tuned on a user's "
        "corrections; not for diagnosis",
    }
    info, result = fine_tune(
        base,
        train_vols,
        val_vols,
        cfg,
        name=name,
        progress=send,
        cancel=state.cancel,
        card_extra=extra,
    )
    if info is None or state.cancel.is_set():
        return None
    return info, result


class FineTuneWidget(QWidget):
    """Fine-tune: see the module docstring."""

    def __init__(self, viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        from ..warmup import for_training

        for_training()  # now, not in the first run's worker (see warmup.py)
        self.viewer = real_viewer(viewer)
        self.tracker = tracker_for(self.viewer)
        self._life = Life()
        self.destroyed.connect(self._life.close)
        self._worker = None
        self._task = None
        self._candidates: list = []  # (layer, patient, reviewed slices), as listed
        self._unchecked: set[int] = set()  # ids of layers the person unticked
        self._trained_on: list[str] = []
        self.new_model: str | None = None
        self.result = None

        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Learn from (reviewed slices only):"))
        self.patients_list = QListWidget(objectName="patients")
        self.patients_list.setMaximumHeight(110)
        layout.addWidget(self.patients_list)

        form = QFormLayout()
        layout.addLayout(form)
        row = QHBoxLayout()
        self.base_combo = QComboBox(objectName="base_model")
        refresh = QToolButton(text="↻", toolTip="Re-read the model store")
        refresh.clicked.connect(lambda: fill_model_combo(self.base_combo))
        row.addWidget(self.base_combo, 1)
        row.addWidget(refresh)
        form.addRow("Base model", row)
        self.base_combo.currentIndexChanged.connect(self._suggest_name)
        self._base_chosen = False  # once the person picks a base, stop following the masks' model
        self.base_combo.activated.connect(lambda _: setattr(self, "_base_chosen", True))

        self.device_combo = QComboBox(objectName="device")
        fill_device_combo(self.device_combo)
        form.addRow("Device", self.device_combo)

        row = QHBoxLayout()
        self.budget_value = QDoubleSpinBox(
            objectName="budget", decimals=1, minimum=0.1, maximum=10000.0, value=1.0
        )
        self.budget_unit = QComboBox(objectName="budget_unit")
        self.budget_unit.addItems(UNITS)
        self.budget_unit.currentIndexChanged.connect(self._describe_budget)
        self.budget_value.valueChanged.connect(self._describe_budget)
        row.addWidget(self.budget_value)
        row.addWidget(self.budget_unit)
        form.addRow("Budget", row)
        self.budget_note = QLabel("", wordWrap=True)
        form.addRow(self.budget_note)

        self.name_edit = QLineEdit(objectName="name")
        self.name_edit.setToolTip(
            "Letters, digits, '.', '_' or '-'; '-v2', '-v3'… is added if the name is taken"
        )
        form.addRow("New model name", self.name_edit)

        row = QHBoxLayout()
        self.run_button = QPushButton("Fine-tune", objectName="run")
        self.cancel_button = QPushButton("Cancel", objectName="cancel", enabled=False)
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.progress = Progress(objectName="progress")
        layout.addWidget(self.progress)

        self.plot = EpochPlot()
        self.canvas, self.loss_line, self.dice_line = (
            self.plot.canvas,
            self.plot.loss_line,
            self.plot.dice_line,
        )
        self._label_short = "validation Dice"
        layout.addWidget(self.canvas)

        self.status = QLabel("", objectName="status", wordWrap=True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)
        self.segment_button = QPushButton(
            "Segment with new model", objectName="segment_new", enabled=False
        )
        self.segment_button.clicked.connect(self.segment_with_new_model)
        layout.addWidget(self.segment_button)
        layout.addStretch(1)

        fill_model_combo(self.base_combo)
        self._suggest_name()
        self._describe_budget()
        layers = self.viewer.layers
        layers.events.inserted.connect(self._refresh_candidates)
        layers.events.removed.connect(self._refresh_candidates)
        self.tracker.connect(self._on_review_changed)
        self._life.on_close.append(self._disconnect_viewer)
        self._refresh_candidates()

    def _disconnect_viewer(self) -> None:
        self.viewer.layers.events.inserted.disconnect(self._refresh_candidates)
        self.viewer.layers.events.removed.disconnect(self._refresh_candidates)
        self.tracker.disconnect(self._on_review_changed)

    # ------------------------------------------------------------------ choices

    def _on_review_changed(self, layer) -> None:
        self._refresh_candidates()

    def _refresh_candidates(self, *_) -> None:
        if self._life.closed:
            return
        # remember what the person unticked before rebuilding
        for i, (layer, _p, _rs) in enumerate(self._candidates):
            item = self.patients_list.item(i)
            if item is not None:
                (
                    self._unchecked.add
                    if item.checkState() != Qt.CheckState.Checked
                    else self._unchecked.discard
                )(id(layer))
        self._candidates = training_candidates(self.viewer.layers)
        self.patients_list.clear()
        for layer, patient, rs in self._candidates:
            ok = patient.flair is not None
            text = f"{patient.patient_id}: {len(rs)} reviewed slice{'s' * (len(rs) != 1)} in '{layer.name}'"
            item = QListWidgetItem(text if ok else text + " (images not open)")
            flags = Qt.ItemFlag.ItemIsUserCheckable | (
                Qt.ItemFlag.ItemIsEnabled if ok else Qt.ItemFlag.NoItemFlags
            )
            item.setFlags(flags)
            checked = ok and id(layer) not in self._unchecked
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
            self.patients_list.addItem(item)
        if not self._candidates:
            item = QListWidgetItem(
                "No reviewed slices yet: correct a prediction with napari's tools, "
                "or press 'Mark slice reviewed' in Segment tumour"
            )
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.patients_list.addItem(item)
        preds = [m.get("model") for layer, _p, _rs in self._candidates if (m := lgg_meta(layer))]
        if (
            self._worker is None
            and preds
            and preds[-1]
            and self.base_combo.findData(preds[-1]) >= 0
            and not self._base_chosen
        ):
            self.base_combo.setCurrentIndex(self.base_combo.findData(preds[-1]))

    def checked_layers(self) -> list:
        out = []
        for i, (layer, patient, rs) in enumerate(self._candidates):
            item = self.patients_list.item(i)
            if item is not None and item.checkState() == Qt.CheckState.Checked:
                out.append((layer, patient, rs))
        return out

    def set_checked(self, layer, checked: bool) -> None:
        for i, (lyr, _p, _rs) in enumerate(self._candidates):
            if lyr is layer:
                self.patients_list.item(i).setCheckState(
                    Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked
                )
                return
        raise ValueError(f"layer '{layer.name}' has no reviewed slices")

    def select_base(self, name: str) -> None:
        fill_model_combo(self.base_combo, name)
        if self.base_combo.currentData() != name:
            raise ValueError(f"model {name!r} is not in the store")
        self._base_chosen = True

    def set_budget(self, value: float, unit: str = "rounds") -> None:
        self.budget_unit.setCurrentIndex(UNITS.index(unit))
        self.budget_value.setValue(value)

    def _suggest_name(self, *_) -> None:
        base = self.base_combo.currentData()
        if base:
            stem = re.sub(r"(-ft)?(-v\d+)?$", "", base)
            self.name_edit.setText(f"{stem}-ft")

    def config(self, n_volumes: int = 1):
        """The TrainConfig for the chosen budget (one round: ``training.fine_tune_config``)."""
        from ..finetune import default_config

        cfg = default_config(n_volumes)
        cfg.device = self.device_combo.currentData()
        value, unit = self.budget_value.value(), self.budget_unit.currentText()
        if unit == "rounds":
            cfg.epochs = max(1, int(round(cfg.epochs * value)))
            cfg.minutes = cfg.minutes * value if cfg.minutes else None
        elif unit == "epochs":
            cfg.epochs, cfg.minutes = max(1, int(round(value))), None
        else:
            cfg.epochs, cfg.minutes = None, value
        return cfg

    def _describe_budget(self, *_) -> None:
        from ..finetune import default_config

        r = default_config()
        cap = f", at most {r.minutes:g} min" if r.minutes else ""
        cfg = self.config()
        now = (
            f"{cfg.epochs} epoch(s) of {cfg.steps_per_epoch or 'auto'} steps" if cfg.epochs else ""
        )
        now += (" or " if now and cfg.minutes else "") + (
            f"{cfg.minutes:g} min" if cfg.minutes else ""
        )
        self.budget_note.setText(
            f"1 round = {r.epochs} epochs of {r.steps_per_epoch} steps of "
            f"{r.batch_size} slices{cap}. This run: {now}."
        )

    # ------------------------------------------------------------------ running

    @property
    def is_running(self) -> bool:
        return self._worker is not None

    def _volumes(self):
        from ..train_data import TrainVolume

        chosen = self.checked_layers()
        if not chosen:
            raise ValueError("tick at least one patient with reviewed slices")
        train_vols = []
        for layer, patient, rs in chosen:
            inp = capture(patient)
            mask = np.asarray(layer.data) > 0
            if mask.shape != inp.flair.shape:
                raise ValueError(
                    f"'{layer.name}' has shape {mask.shape}, its FLAIR has {inp.flair.shape}"
                )
            labelled = np.zeros(mask.shape[0], bool)
            labelled[rs] = True
            train_vols.append(
                TrainVolume(patient.patient_id, inp.volume(), mask, labelled, "memory")
            )
        trained = {v.patient_id for v in train_vols}
        val_vols = []
        for pid, p in find_patients(self.viewer.layers).items():
            if pid not in trained and p.ground_truth is not None and p.flair is not None:
                inp = capture(p)
                if inp.truth is not None:
                    val_vols.append(TrainVolume(pid, inp.volume(), inp.truth > 0))
        if val_vols:
            label = (
                "validation Dice (ground truth of "
                + ", ".join(v.patient_id for v in val_vols)
                + ")"
            )
        else:
            val_vols, label = train_vols, CORRECTED_LABEL
        return train_vols, val_vols, label

    def run(self) -> bool:
        """Start fine-tuning; False (with the reason in the status line) if it cannot start."""
        from ..models import ModelError, check_name

        if self._worker is not None:
            return False
        base, name = self.base_combo.currentData(), self.name_edit.text().strip()
        try:
            if base is None:
                raise ValueError("no base model in the store")
            check_name(name)
            train_vols, val_vols, label = self._volumes()
        except (ValueError, ModelError) as exc:
            self.status.setText(f"Cannot fine-tune: {exc}")
            return False
        cfg = self.config(len(train_vols))
        state = RunState()
        relay = Relay()
        relay.event.connect(self._on_event)
        worker = create_worker(
            _finetune_job,
            train_vols,
            val_vols,
            label,
            base,
            name,
            cfg,
            state,
            relay.event.emit,
            _start_thread=False,
        )
        worker._lggseg_relay = relay
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker, self._life.state = worker, state
        self._trained_on = [v.patient_id for v in train_vols]
        self._task = register_task(self.viewer, f"fine-tuning {base} into {name}", state)
        self._reset_plot(label, cfg.epochs)
        self.progress.set_fraction(0.0, force=True)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.segment_button.setEnabled(False)
        n = sum(int(np.count_nonzero(v.labelled)) for v in train_vols)
        self.status.setText(f"Fine-tuning {base} on {n} reviewed slice(s)…")
        worker.start()
        return True

    def cancel(self) -> None:
        if self._worker is not None and self._life.state is not None:
            self._life.state.cancel.set()
            self.cancel_button.setEnabled(False)
            self.status.setText("Cancelling (stops after the current step; nothing is saved)…")

    def _on_event(self, ev: dict) -> None:
        state = self._life.state
        if self._life.closed or state is None or state.cancel.is_set():
            return
        kind = ev.get("kind")
        if kind == "stage":
            self.status.setText(ev["text"][:1].upper() + ev["text"][1:] + "…")
        elif kind == "step":
            frac = ev.get("fraction") or 0.0
            if ev.get("total_steps"):
                frac = max(frac, ev["step"] / ev["total_steps"])
            self.progress.set_fraction(frac)
        elif kind == "epoch":
            self._plot_epoch(ev)

    def _on_returned(self, out) -> None:
        if self._life.closed:
            return
        if out is None:
            self.status.setText("Cancelled: no model was saved.")
            return
        info, result = out
        self.new_model, self.result = info.name, result
        self.progress.set_fraction(1.0, force=True)
        fill_model_combo(self.base_combo)
        before = result.history[0].get("val_dice") if result.history else None
        dice = ""
        if result.best_val_dice is not None:
            dice = (
                f"; {self._label_short}: "
                + (f"{before:.3f} → " if before is not None else "")
                + f"{result.best_val_dice:.3f} (epoch {result.best_epoch})"
            )
        if result.best_epoch == 0:
            dice += " — no epoch beat the base model, so the new model keeps its weights"
        seg = segment_widget_for(self.viewer)
        if seg is not None:
            seg.refresh_models(select=info.name)
        self.segment_button.setEnabled(True)
        caveat = ""
        if self._label_short == CORRECTED_LABEL and result.best_val_dice is not None:
            # in training/HITL.md a round raised this while other patients lost Dice: say so
            caveat = (
                " That Dice is on the slices it learned from; to see whether other patients gain, open "
                "one with ground truth (unticked) before fine-tuning, or segment one you know."
            )
        self.status.setText(
            f"Saved model '{info.name}' ({result.steps} steps, {result.seconds:.0f} s, "
            f"{result.stopped}){dice}." + (" Selected in Segment tumour." if seg else "") + caveat
        )

    def _on_errored(self, exc) -> None:
        if not self._life.closed:
            self.status.setText(f"Fine-tuning failed: {exc}")

    def _on_finished(self) -> None:
        state = self._life.state
        finish_task(
            self.viewer, self._task, "CANCELLED" if state and state.cancel.is_set() else "COMPLETED"
        )
        self._worker, self._task, self._life.state = None, None, None
        if self._life.closed:
            return
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def segment_with_new_model(self) -> bool:
        """Select the new model in Segment tumour (docking it if needed) and segment the patient
        it was fine-tuned on (or the one chosen there)."""
        if not self.new_model:
            return False
        seg = segment_widget_for(self.viewer)
        if seg is None:
            self.viewer.window.add_plugin_dock_widget(PLUGIN, "Segment tumour")
            seg = segment_widget_for(self.viewer)
        seg.select_model(self.new_model)
        for pid in self._trained_on:
            if seg.patient_combo.findData(pid) >= 0:
                seg.set_patient(pid)
                break
        return seg.run()

    # ------------------------------------------------------------------ plot

    def _reset_plot(self, dice_label: str, epochs: int | None = None) -> None:
        self._label_short = CORRECTED_LABEL if dice_label == CORRECTED_LABEL else "validation Dice"
        self.plot.reset(dice_label, epochs)

    def _plot_epoch(self, ev: dict) -> None:
        self.plot.add_epoch(ev.get("epoch", 0), ev.get("loss"), ev.get("val_dice"))

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.plot.shown()

    def plot_points(self) -> dict[str, int]:
        """How many points each curve holds (one per finished epoch)."""
        return self.plot.points()
