"""The Fine-tune dock: learn from the slices people reviewed, save a new model, use it.

* **What it learns from**: every open LGG mask with reviewed slices (a prediction someone
  corrected, a corrections folder, an edited ground truth), one checkbox each with its count.
  Only the reviewed slices are trusted; the rest of the volume is not used for the loss.
* **Validation**: the ground truth of open patients that are not being trained on; when there
  is none, the reviewed slices themselves, and the plot says "Dice on corrected slices".
* **Budget**: by default one round (:func:`napari_lggseg.finetune.fine_tune_config`, the round
  ``benchmarks/bench_finetune_round.py`` measures); or a number of rounds, epochs or minutes.
* **Cancel** stops at the next step and saves nothing; closing the viewer mid-run cancels the
  same way (the shared :class:`._runner.RunController`).
* **On finish** the model is saved under a new, never reused name, selected in the Segment
  tumour widget, and "Segment with new model" re-segments the patient in one click. When the
  store cannot take it (read-only, disk full) the status says where the complete copy went.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import napari.viewer
import numpy as np
from magicgui.widgets import PushButton
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QListWidget, QListWidgetItem, QSizePolicy, QWidget

from ..layer_meta import PLUGIN, read_meta, unwrap_viewer
from ..patients import capture, find_patients, training_candidates
from ..review import tracker_for
from ._common import (
    refill_models,
    scrolling_body,
    segment_widget_for,
    status_label,
    wrapping_list,
)
from ._forms import finetune_form
from ._plot import EpochPlot
from ._runner import RunController, RunEvent

CORRECTED_LABEL = "Dice on corrected slices"


@dataclass
class FineTuneOutcome:
    info: object | None  # the stored model's ModelInfo, or None when the store failed
    result: object  # TrainResult
    not_stored: object | None = None  # models.SavedModel of a model the store could not take


def _finetune_job(train_vols, val_vols, validation, base, name, cfg, state, emit):
    """Worker thread: one fine-tuning run through the same core as the CLI
    (:func:`napari_lggseg.finetune.fine_tune`). None when cancelled."""
    from ..finetune import ModelNotStored, fine_tune

    def relay(ev: dict):
        if state.closed:
            return
        if ev.get("kind") == "step":
            frac = ev.get("fraction") or 0.0
            if ev.get("total_steps"):
                frac = max(frac, ev["step"] / ev["total_steps"])
            emit(RunEvent("progress", fraction=frac))
        elif ev.get("kind") == "epoch":
            emit(RunEvent("epoch", data=ev))

    if not state.closed:
        who = ", ".join(v.patient_id for v in train_vols)
        emit(RunEvent("stage", f"fine-tuning {base} on {who}"))
    extra = {
        "validation": validation,
        "corrected_slices": {v.patient_id: int(np.count_nonzero(v.labelled)) for v in train_vols},
        "intended_use": "research segmentation of LGG FLAIR abnormality, fine-tuned on a user's "
        "corrections; not for diagnosis",
    }
    try:
        info, result = fine_tune(
            base, train_vols, val_vols, cfg, name=name, progress=relay, cancel=state.cancel,
            card_extra=extra,
        )  # fmt: skip
    except ModelNotStored as exc:
        return FineTuneOutcome(None, exc.result, exc.saved)
    if info is None or state.cancel.is_set():
        return None
    return FineTuneOutcome(info, result)


class CandidateList(QListWidget):
    """The masks to learn from, one checkable row each (hand-built: magicgui has no checkable
    list). Unticked rows stay unticked when the list is rebuilt."""

    def __init__(self):
        super().__init__(objectName="patients")
        wrapping_list(self)
        self.candidates: list = []  # (layer, patient, reviewed slices), as listed
        self._unchecked: set[int] = set()  # ids of layers the person unticked
        self.setMinimumHeight(50)
        self.setMaximumHeight(90)

    def refresh(self, candidates: list) -> None:
        for i, (layer, _p, _rs) in enumerate(self.candidates):
            item = self.item(i)
            if item is not None:
                unticked = item.checkState() != Qt.CheckState.Checked
                (self._unchecked.add if unticked else self._unchecked.discard)(id(layer))
        self.candidates = candidates
        self.clear()
        for layer, patient, rs in candidates:
            ok = patient.flair is not None
            text = f"{patient.patient_id}: {len(rs)} reviewed slice{'s' * (len(rs) != 1)} in '{layer.name}'"
            item = QListWidgetItem(text if ok else text + " (images not open)")
            enabled = Qt.ItemFlag.ItemIsEnabled if ok else Qt.ItemFlag.NoItemFlags
            item.setFlags(Qt.ItemFlag.ItemIsUserCheckable | enabled)
            checked = ok and id(layer) not in self._unchecked
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
            self.addItem(item)
        if not candidates:
            item = QListWidgetItem(
                "No reviewed slices yet: correct a prediction with napari's tools, "
                "or press 'Mark slice reviewed' in Segment tumour"
            )
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.addItem(item)

    def checked(self) -> list:
        return [
            c
            for i, c in enumerate(self.candidates)
            if self.item(i) is not None and self.item(i).checkState() == Qt.CheckState.Checked
        ]

    def set_checked(self, layer, checked: bool) -> None:
        for i, (lyr, _p, _rs) in enumerate(self.candidates):
            if lyr is layer:
                state = Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked
                self.item(i).setCheckState(state)
                return
        raise ValueError(f"layer '{layer.name}' has no reviewed slices")


class FineTuneWidget(QWidget):
    """Fine-tune: see the module docstring."""

    def __init__(self, viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        from ..warmup import for_training

        for_training()  # now, not in the first run's worker (see warmup.py)
        self.viewer = unwrap_viewer(viewer)
        self.tracker = tracker_for(self.viewer)
        self._trained_on: list[str] = []
        self._base_chosen = False  # once the person picks a base, stop following the masks' model
        self.new_model: str | None = None
        self.result = None
        self.dice_label = "validation Dice"  # what the plot's Dice curve measures this run
        self.form = f = finetune_form()
        self.run_button, self.cancel_button = f.buttons.run, f.buttons.cancel
        self.runner = RunController(
            self.viewer, self, self.run_button, self.cancel_button, self._set_status,
            on_event=self._on_event, can_run=lambda: self.form.base_row.base_model.value is not None,
        )  # fmt: skip
        self.progress = self.runner.progress
        self.candidates = CandidateList()
        self.budget_note = status_label("budget_note")
        self.plot = EpochPlot()
        self.plot.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.plot.canvas.setFixedHeight(220)
        self.status = status_label("status")
        self.segment_button = PushButton(name="segment_new", text="Segment with new model")
        self.segment_button.enabled = False
        body = scrolling_body(self)
        for w in (
            QLabel("Learn from (reviewed slices only):"), self.candidates, f.native,
            self.budget_note, self.progress, self.status, self.segment_button.native,
            self.plot.canvas,
        ):  # fmt: skip
            body.addWidget(w)
        body.addStretch(1)
        self._connect(f)
        refill_models(f.base_row.base_model)
        self._suggest_name()
        self._describe_budget()
        self._refresh_candidates()

    def _connect(self, f) -> None:
        base = f.base_row.base_model
        base.changed.connect(self._suggest_name)
        base.native.activated.connect(lambda *_: setattr(self, "_base_chosen", True))
        f.base_row.refresh_models.changed.connect(lambda *_: refill_models(base))
        f.budget_row.budget.changed.connect(self._describe_budget)
        f.budget_row.budget_unit.changed.connect(self._describe_budget)
        self.run_button.changed.connect(lambda *_: self.run())
        self.segment_button.changed.connect(lambda *_: self.segment_with_new_model())
        layers = self.viewer.layers
        layers.events.inserted.connect(self._refresh_candidates)
        layers.events.removed.connect(self._refresh_candidates)
        self.tracker.connect(self._on_review_changed)

        def disconnect():
            layers.events.inserted.disconnect(self._refresh_candidates)
            layers.events.removed.disconnect(self._refresh_candidates)
            self.tracker.disconnect(self._on_review_changed)

        self.runner.on_close.append(disconnect)

    # ------------------------------------------------------------------ choices

    def _on_review_changed(self, layer) -> None:
        self._refresh_candidates()

    def _refresh_candidates(self, *_) -> None:
        if self.runner.closed:
            return
        self.candidates.refresh(training_candidates(self.viewer.layers))
        models = [
            m.get("model") for lyr, _p, _rs in self.candidates.candidates if (m := read_meta(lyr))
        ]
        base = self.form.base_row.base_model
        follow = not self.runner.is_running and not self._base_chosen
        if follow and models and models[-1] in base.choices:
            base.value = models[-1]

    def checked_layers(self) -> list:
        return self.candidates.checked()

    def set_checked(self, layer, checked: bool) -> None:
        self.candidates.set_checked(layer, checked)

    def select_base(self, name: str) -> None:
        refill_models(self.form.base_row.base_model, name)
        if self.form.base_row.base_model.value != name:
            raise ValueError(f"model {name!r} is not in the store")
        self._base_chosen = True

    def set_budget(self, value: float, unit: str = "rounds") -> None:
        row = self.form.budget_row
        row.budget_unit.value = unit
        row.budget.value = value

    def _suggest_name(self, *_) -> None:
        base = self.form.base_row.base_model.value
        if base:
            self.form.model_name.value = re.sub(r"(-ft)?(-v\d+)?$", "", base) + "-ft"

    def config(self, n_volumes: int = 1):
        """The TrainConfig for the chosen budget (one round: ``finetune.fine_tune_config``)."""
        from ..finetune import fine_tune_config

        cfg = fine_tune_config(n_volumes, device=self.form.device.value)
        value, unit = (
            float(self.form.budget_row.budget.value),
            self.form.budget_row.budget_unit.value,
        )
        if unit == "rounds":
            cfg.epochs = max(1, int(round(cfg.epochs * value)))
            cfg.minutes = cfg.minutes * value if cfg.minutes else None
        elif unit == "epochs":
            cfg.epochs, cfg.minutes = max(1, int(round(value))), None
        else:
            cfg.epochs, cfg.minutes = None, value
        return cfg

    def _describe_budget(self, *_) -> None:
        from ..finetune import fine_tune_config

        r, cfg = fine_tune_config(), self.config()
        cap = f", at most {r.minutes:g} min" if r.minutes else ""
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
        return self.runner.is_running

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
        if not val_vols:
            return train_vols, train_vols, CORRECTED_LABEL
        names = ", ".join(v.patient_id for v in val_vols)
        return train_vols, val_vols, f"validation Dice (ground truth of {names})"

    def run(self) -> bool:
        """Start fine-tuning; False (with the reason in the status line) if it cannot start."""
        from ..models import ModelError, check_name

        if self.runner.is_running:
            return False
        base, name = self.form.base_row.base_model.value, self.form.model_name.value.strip()
        try:
            if base is None:
                raise ValueError("no base model in the store")
            check_name(name)
            train_vols, val_vols, label = self._volumes()
        except (ValueError, ModelError) as exc:
            self._set_status(f"Cannot fine-tune: {exc}")
            return False
        cfg = self.config(len(train_vols))
        self._trained_on = [v.patient_id for v in train_vols]
        self.dice_label = CORRECTED_LABEL if label == CORRECTED_LABEL else "validation Dice"
        self.plot.reset(label, cfg.epochs)
        self.segment_button.enabled = False
        n = sum(int(np.count_nonzero(v.labelled)) for v in train_vols)
        return self.runner.start(
            _finetune_job, train_vols, val_vols, label, base, name, cfg,
            description=f"fine-tuning {base} into {name}",
            on_returned=self._on_returned,
            failure="Fine-tuning failed",
            cancel_note="Cancelling (stops after the current step; nothing is saved)…",
            status=f"Fine-tuning {base} on {n} reviewed slice(s)…",
        )  # fmt: skip

    def cancel(self) -> None:
        self.runner.cancel()

    def _on_event(self, ev: RunEvent) -> None:
        if ev.kind == "epoch":
            d = ev.data
            self.plot.add_epoch(d.get("epoch", 0), d.get("loss"), d.get("val_dice"))

    def _on_returned(self, out: FineTuneOutcome | None) -> None:
        if out is None:
            self._set_status("Cancelled: no model was saved.")
            return
        result = out.result
        self.result = result
        if out.info is None:  # trained, but the store could not take it: say where it is
            self._set_status(f"Trained, but {out.not_stored.message()}.")
            return
        self.new_model = out.info.name
        refill_models(self.form.base_row.base_model)
        seg = segment_widget_for(self.viewer)
        if seg is not None:
            seg.refresh_models(select=out.info.name)
        self.segment_button.enabled = True
        self._set_status(
            f"Saved model '{out.info.name}' ({result.steps} steps, {result.seconds:.0f} s, "
            f"{result.stopped}){self._dice_summary(result)}."
            + (" Selected in Segment tumour." if seg else "")
            + self._caveat(result)
        )

    def _dice_summary(self, result) -> str:
        before = result.history[0].get("val_dice") if result.history else None
        text = ""
        if result.best_val_dice is not None:
            text = (
                f"; {self.dice_label}: "
                + (f"{before:.3f} → " if before is not None else "")
                + f"{result.best_val_dice:.3f} (epoch {result.best_epoch})"
            )
        if result.best_epoch == 0:
            text += " — no epoch beat the base model, so the new model keeps its weights"
        return text

    def _caveat(self, result) -> str:
        if self.dice_label != CORRECTED_LABEL or result.best_val_dice is None:
            return ""
        # in training/HITL.md a round raised this while other patients lost Dice: say so
        return (
            " That Dice is on the slices it learned from; to see whether other patients gain, open "
            "one with ground truth (unticked) before fine-tuning, or segment one you know."
        )

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
            if seg.has_patient(pid):
                seg.set_patient(pid)
                break
        return seg.run()

    def _set_status(self, text: str) -> None:
        self.status.setText(text)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.plot.shown()
