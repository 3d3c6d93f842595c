"""The Annotation project dock, part 2: opening cases and editing them (Next, Previous, Done,
autosave, slices to check). A mixin of :class:`._project.ProjectWidget`, which holds the state
it uses; kept apart so that each file stays one screenful of concerns."""

from __future__ import annotations

import time

import numpy as np
from qtpy.QtCore import QTimer

from ..layer_meta import is_paintable, read_meta
from ..project import ProjectWriteError
from ..project_store import now_iso
from ..review import reviewed_slices
from ._common import segment_widget_for
from ._project_work import done_job, flush_job, open_job, save_job

RETRY_MS = 5000  # a project folder that could not be written is tried again this often
MIN_SLICE_SCORE = 5.0  # "uncertain slice": as uncertainty.slices_to_review


class CasesMixin:
    def next_case(self) -> bool:
        """Save the open case and open the next one in the chosen order."""
        if self.project is None:
            return False
        nxt = self.project.next_case(self._opening or self.current)
        if nxt is None:
            self._say("Every case is done (or cannot be read)." if self.current else "No case.")
            return False
        return self.open_case(nxt)

    def previous_case(self) -> bool:
        if self.project is None:
            return False
        prev = self.project.previous_case(self._opening or self.current)
        if prev is None:
            self._say("This is the first case.")
            return False
        return self.open_case(prev)

    def open_case(self, case_id: str) -> bool:
        """Save the open case and open ``case_id`` (in a worker; shown when read)."""
        if self.project is None or case_id in (self.current, self._opening):
            return False
        self._paused = False
        if self._opening is not None:
            self._open_request = case_id  # after the one being opened
            return True
        snapshot = self.autosave.snapshot()
        for layer in self.case_layers:
            if layer is not None and is_paintable(layer):
                layer.editable = False  # edits made while the next case loads would be lost
        self._opening, self._open_started = case_id, time.perf_counter()
        self._say(f"Opening {case_id}…")
        self.io.submit(
            "open",
            open_job,
            self.project,
            snapshot,
            case_id,
            self._data.pop(case_id, None),
            bool(self.form.show_dice.value),
            segment_widget_for(self.viewer) is not None,
            on_done=self._on_opened,
            on_error=self._on_open_failed,
        )
        return True

    def _on_opened(self, shown) -> None:
        case_id = shown.opened.data.case_id
        self._opening = None
        self.current, self.opened = case_id, shown.opened
        self._show_layers(shown.layers)
        pred = shown.opened.prediction
        self._uncertainty = None if pred is None else np.asarray(pred.slice_uncertainty)
        if shown.mask is not None:
            self._add_mask(shown.mask, shown.segmentation, shown.review)
        self.last_open_seconds = time.perf_counter() - self._open_started
        waiting = " Predicting it…" if shown.mask is None else ""
        self._say(f"{case_id}: opened in {self.last_open_seconds:.1f} s.{waiting}")
        if shown.saved_note:
            self._on_save_failed(ProjectWriteError(shown.saved_note))
        self._keep_data_of_next()
        self._refresh()
        request, self._open_request = self._open_request, None
        if request is not None and request != case_id:
            self.open_case(request)
        QTimer.singleShot(0, self._pump)  # after the old layers' removal: not both at once

    def _on_open_failed(self, exc) -> None:
        case_id, self._opening = self._opening, None
        for layer in self.case_layers:
            if is_paintable(layer):
                layer.editable = True
        self._say(f"Cannot open {case_id}: {exc}")
        self._refresh()
        request, self._open_request = self._open_request, None
        if request is not None:
            self.open_case(request)

    def _add_mask(self, mask_and_kwargs, segmentation=None, review=()) -> None:
        from napari.layers import Labels

        data, kwargs = mask_and_kwargs
        layer = Labels(data, **kwargs)
        seg_widget = segment_widget_for(self.viewer)
        if seg_widget is not None and segmentation is not None:
            self._register_in_segment_widget(seg_widget, layer, segmentation, review)
        self.viewer.add_layer(layer)
        self.mask_layer = layer
        self.case_layers.append(layer)
        self.viewer.layers.selection.active = layer
        self.autosave.watch(layer, self.current)
        z = self._first_slice()
        if z is not None:
            self.go_to_slice(z)

    def _register_in_segment_widget(self, seg_widget, layer, segmentation, review) -> None:
        """Segment tumour lists the slices to check first (and re-thresholds) for results in its
        session: register this one, before the layer is added (adding refreshes that dock)."""
        from ..patients import capture, find_patients
        from ..session import SegmentResult

        patient = find_patients(self.viewer.layers).get(self.current)
        if patient is not None and patient.flair is not None:
            inp = capture(patient)
            seg_widget.session.results[self.current] = SegmentResult(
                layer, segmentation, inp, list(review)
            )

    def _first_slice(self) -> int | None:
        u = self._uncertainty
        if u is None or self.mask_layer is None:
            return None
        done = set(reviewed_slices(self.mask_layer))
        order = [int(z) for z in np.argsort(-u, kind="stable") if int(z) not in done]
        return order[0] if order else None

    def _show_layers(self, tuples) -> None:
        """The new case's images go into the previous case's image layers (napari builds a layer
        in ~0.25 s and collects garbage on each removal, ~0.2 s, on the GUI thread); its masks
        are new layers, so that no undo step or reviewed slice of the previous case follows."""
        from napari.layers import Image

        old = [lyr for lyr in self.case_layers if lyr in self.viewer.layers]
        reusable = {
            (read_meta(lyr) or {}).get("sequence"): lyr for lyr in old if isinstance(lyr, Image)
        }
        shown = []
        for data, kwargs, kind in tuples:
            layer = (
                reusable.pop(read_meta(kwargs).get("sequence"), None) if kind == "image" else None
            )
            if layer is not None and _refill_image(layer, data, kwargs):
                shown.append(layer)
            else:
                shown.append(getattr(self.viewer, f"add_{kind}")(data, **kwargs))
        self.autosave.unwatch()
        gone = [lyr for lyr in old if lyr not in shown]
        for layer in gone:
            layer.visible = False
        if gone:  # once the new case is on screen: napari collects garbage on each removal
            self._removing = gone
            QTimer.singleShot(0, lambda: self._remove_layers(gone))
        self.case_layers, self.mask_layer, self._uncertainty = shown, None, None

    def _remove_layers(self, layers) -> None:
        for layer in layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        if self._removing is layers:
            self._removing = None

    def _close_case_layers(self) -> None:
        self.autosave.unwatch()
        self._remove_layers(self.case_layers)
        self.case_layers, self.mask_layer, self._uncertainty = [], None, None

    def _keep_data_of_next(self) -> None:
        """Keep only the next two cases read ahead (memory: a BraTS case is ~180 MB)."""
        keep, after = set(), self.current
        for _ in range(2):
            after = self.project.next_case(after)
            if after is None:
                break
            keep.add(after)
        for case_id in [c for c in self._data if c not in keep]:
            del self._data[case_id]

    # ------------------------------------------------------------------ editing

    def done(self) -> bool:
        """The whole open case is reviewed: save it as done and open the next case."""
        if self.project is None or self.current is None or self._opening is not None:
            self._say("Open a case first.")
            return False
        if self.mask_layer is None:
            self._say(f"{self.current}: wait for its prediction, then review it.")
            return False
        case_id = self.current
        self.autosave.snapshot()  # the Done save below carries the latest mask
        mask = np.array(self.mask_layer.data, copy=True)
        read_meta(self.mask_layer)["whole_volume_reviewed"] = True
        self.io.submit(
            "save",
            done_job,
            self.project,
            case_id,
            mask,
            on_done=self._on_done_saved,
            on_error=self._on_save_failed,
        )
        nxt = self.project.next_case(case_id)
        if nxt is not None:
            self.open_case(nxt)
        else:
            self._say(f"{case_id} done: every case is done (or cannot be read).")
        return True

    def _on_done_saved(self, case_id: str) -> None:
        self._round_wanted = True  # recorded now: the round counts this case
        self._on_saved(case_id)
        self._pump()

    def _save_snapshot(self, case_id: str, mask, reviewed) -> None:
        self.io.submit(
            "save",
            save_job,
            self.project,
            case_id,
            mask,
            reviewed,
            on_done=self._on_saved,
            on_error=self._on_save_failed,
        )

    def _on_saved(self, case_id=None) -> None:
        if self.project is None:
            return
        pending = self.project.pending_edits
        if not pending:
            self._retry.stop()
            when = now_iso()[11:19]
            self.save_status.setText(f"All edits saved ({case_id or 'retry'}, {when} UTC).")
        self._refresh()

    def _on_save_failed(self, exc) -> None:
        if isinstance(exc, ProjectWriteError):
            n = len(self.project.pending_edits) if self.project else 0
            self.save_status.setText(
                f"{exc}. {n} case(s) wait in memory; trying again every {RETRY_MS // 1000} s."
            )
            self._retry.start()
        else:
            self.save_status.setText(f"Not saved: {exc}")
        self._refresh()

    def _retry_flush(self) -> None:
        if self.project is None or not self.project.pending_edits:
            self._retry.stop()
            return
        if not self.io.busy:
            self.io.submit(
                "save",
                flush_job,
                self.project,
                on_done=self._on_saved,
                on_error=self._on_save_failed,
            )

    def _on_review_changed(self, layer) -> None:
        if layer is self.mask_layer and layer is not None:
            self.autosave.schedule()

    def current_slice(self) -> int:
        layer = self.mask_layer or (self.case_layers[0] if self.case_layers else None)
        if layer is None:
            return int(self.viewer.dims.current_step[0])
        point = layer.world_to_data(self.viewer.dims.point[-layer.ndim :])
        return int(round(float(point[0])))

    def go_to_slice(self, z: int) -> None:
        layer = self.mask_layer or (self.case_layers[0] if self.case_layers else None)
        if layer is None:
            return
        world = layer.data_to_world([z] + [0] * (layer.ndim - 1))
        self.viewer.dims.set_point(self.viewer.dims.ndim - layer.ndim, float(world[0]))

    def mark_slice(self) -> list[int]:
        """The mask on the slice on screen is right as it is: it counts as reviewed."""
        if self.mask_layer is None:
            self._say("Nothing to mark: open a case with its prediction first.")
            return []
        z = self.current_slice()
        new = self.tracker.mark(self.mask_layer, [z])
        self._say(f"Slice {z} " + ("marked reviewed." if new else "was already reviewed."))
        return new

    def next_uncertain_slice(self) -> int | None:
        """Go to the next slice the model is least sure of that is not reviewed yet."""
        u = self._uncertainty
        if u is None or self.mask_layer is None:
            self._say("No prediction of this case to rank its slices.")
            return None
        done = set(reviewed_slices(self.mask_layer))
        ranked = [
            int(z)
            for z in np.argsort(-u, kind="stable")
            if u[z] >= MIN_SLICE_SCORE and z not in done
        ]
        if not ranked:
            self._say("No uncertain slice left to review.")
            return None
        now = self.current_slice()
        z = ranked[(ranked.index(now) + 1) % len(ranked) if now in ranked else 0]
        self.go_to_slice(z)
        self._say(f"Slice {z}: {u[z]:.0f} uncertain voxels; {len(ranked)} such slices unreviewed.")
        return z


def _refill_image(layer, data, kwargs) -> bool:
    """Put another case's sequence into an open image layer; False when it cannot hold it."""
    if np.ndim(data) != layer.ndim or np.asarray(data).dtype != layer.data.dtype:
        return False
    ones = (1.0,) * layer.ndim
    layer.metadata = kwargs["metadata"]
    layer.name = kwargs["name"]
    layer.scale = kwargs.get("scale", ones)
    layer.translate = kwargs.get("translate", (0.0,) * layer.ndim)
    layer.data = data
    layer.contrast_limits = kwargs["contrast_limits"]
    layer.visible = kwargs.get("visible", True)
    return True
