"""The Annotation project dock, part 3: the background model work on the run controller, one
job at a time: a due fine-tuning round, the open case's prediction (Run), the cases that need a
prediction from the project's model (the next ones first), then reading the next case ahead.
A mixin of :class:`._project.ProjectWidget`."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QTimer

from ..layer_meta import read_meta
from ..review import is_touched
from ._common import refill_models, segment_widget_for
from ._project_work import (
    JobFailed,
    Predicted,
    background_threads,
    mask_tuple,
    predict_job,
    read_job,
    round_job,
    rounds_available,
)


class BackgroundMixin:
    def run(self) -> bool:
        """Predict the open case again with the project's model (not over your edits)."""
        if self.project is None or self.current is None:
            self._say("Open a case first.")
            return False
        layer = self.mask_layer
        if (self.opened and self.opened.edit is not None) or (
            layer is not None and is_touched(layer)
        ):
            self._say(f"{self.current} has your edits: Run would replace them, so it does not.")
            return False
        self._run_request, self._paused = self.current, False
        self._pump()
        return True

    def _pump(self) -> None:
        """Start the next background job when none runs: a due round, the open case's
        prediction, then the cases that need one (the next ones first), then reading ahead."""
        p = self.project
        if p is None or p.closed or self.runner.is_running or self.runner.closed:
            return
        model, device = p.current_model, self.form.device.value
        if self._round_wanted:
            self._round_wanted = False
            if p.round_due() and rounds_available():
                return self._start("round", None, round_job, p, self.round_minutes)
        case = self._run_request
        if case is None and self.current and self.mask_layer is None and self._opening is None:
            case = self.current
        if case is None and not self._paused:
            todo = p.cases_to_prefetch(after=self.current, n=1)
            case = todo[0] if todo else None
        if case is not None and model is not None:
            self._run_request = None
            waited_for = case == self.current  # the open case: all threads
            with_review = waited_for and segment_widget_for(self.viewer) is not None
            threads = None if waited_for else background_threads()
            args = (p, case, model, device, self._segmenters, with_review, threads)
            return self._start("predict", case, predict_job, *args)
        nxt = p.next_case(self.current)  # the first case too, before any is open
        if nxt and nxt not in self._data and nxt not in self._read_tried and not self._paused:
            self._read_tried.add(nxt)
            return self._start("read", nxt, read_job, p, nxt)
        if not self._paused:  # a paused dock keeps saying why it stopped
            self.work_status.setText(
                f"Every case not opened yet has a prediction from {model}."
                if model
                else "No model in the store to predict with (see README)."
            )

    def _start(self, kind: str, case: str | None, job, project, *args) -> None:
        self._job = (kind, case, False)
        self._job_project = project  # a result for a project closed meanwhile is dropped
        what = {"round": "a fine-tuning round", "predict": f"predicting {case}"}
        started = self.runner.start(
            job,
            project,
            *args,
            description=what.get(kind, f"reading {case}"),
            on_returned=self._on_job_returned,
            failure="Fine-tuning round failed" if kind == "round" else f"Failed on {case}",
        )
        if started:
            self.runner.when_done(self._after_job)

    def _on_job_returned(self, out) -> None:
        kind, case, _ = self._job
        self._job = (kind, case, True)
        if out is None or self.project is None or self._job_project is not self.project:
            return
        if isinstance(out, JobFailed):
            self.work_status.setText(out.message[:1].upper() + out.message[1:])
            if kind != "round":
                self._paused = True  # no retry loop; opening a case or Run tries again
            return
        if kind == "round":
            return self._on_round(out)
        if out.error:
            self.work_status.setText(f"{out.case_id}: {out.error}")
            if out.case_id == self.current and out.prediction is None:
                self._paused = True  # the open case failed: do not try it again and again
        if out.data is not None and out.case_id != self.current:
            self._data[out.case_id] = out.data
            self._keep_data_of_next()
        if out.prediction is not None and out.case_id == self.current:
            self._show_prediction(out)
        self._refresh()

    def _show_prediction(self, out: Predicted) -> None:
        """A prediction of the open case: shown when it has no mask yet; replaces an untouched
        one (Run); never a mask the person edited."""
        self._uncertainty = np.asarray(out.prediction.slice_uncertainty)
        layer = self.mask_layer
        flair = next(
            (lyr for lyr in self.case_layers if read_meta(lyr).get("sequence") == "FLAIR"), None
        )
        if layer is None and flair is not None:
            place = {"scale": tuple(flair.scale), "translate": tuple(flair.translate)}
            layers = [(None, {"metadata": flair.metadata, **place}, "image")]
            tup = mask_tuple(self.project, self.current, layers, out.prediction, None)
            self._add_mask(tup, *out.review)
        elif not is_touched(layer) and self.opened.edit is None:
            with self.tracker.programmatic(layer):
                layer.data = np.asarray(out.prediction.mask, np.uint8)
            read_meta(layer)["model"] = out.prediction.model
            self.autosave.rebase()
        self._say(f"{self.current}: predicted by {out.prediction.model}.")

    def _on_round(self, finished_round) -> None:
        self.rounds_run += 1
        self._segmenters.clear()  # the old model's; the next predictions load the new one
        refill_models(self.form.model_row.model)
        combo = self.form.model_row.model
        if finished_round.model in combo.choices:
            with combo.changed.blocked():
                combo.value = finished_round.model
        n = len(self.project.cases_to_repredict())
        self._say(
            f"Round {len(self.project.rounds)}: {finished_round.model} learnt from "
            f"{len(finished_round.trained_on)} done cases; predicting {n} case(s) again."
        )
        self._refresh()

    def _after_job(self) -> None:
        kind, case, returned = self._job
        if not returned and kind != "round":
            self._paused = True  # it failed (the status says why): no retry loop
        if self.project is not None and case is not None and not returned:
            self._refresh()
        QTimer.singleShot(0, self._pump)
