"""An annotation project: a worklist over a cohort, with autosave and crash recovery. No Qt.

A project folder holds everything the project writes; the data source is only read::

    <project>/lggseg_project.json      version, source (relative path), settings, the case table
    <project>/.lggseg_project.lock     who has it open (pid, host, time)
    <project>/predictions/<case>.npz   the model's mask, probabilities, per-slice uncertainty
    <project>/corrections/<case>/      the person's mask in the case's own format (LGG corrections
                                       folder; NIfTI mask + sidecar), replaced whole on each save

The corrections folders are the truth about edits: after a kill between saving an edit and
saving the table, :meth:`Project.open` rebuilds the table's edit columns from them. Edits that
cannot be written (folder read-only, disk full) stay queued in memory until :meth:`Project.flush`
succeeds. The widget is a thin view on this; the CLI and the simulation scripts use it directly.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from . import project_sources as sources
from . import project_store as store
from .project_order import OrderMixin
from .project_rounds import RoundsMixin
from .project_sources import CaseData, SavedEdit
from .project_store import (  # noqa: F401  (re-exported: the project's public names)
    NOT_OPENED,
    ORDERS,
    STATUSES,
    CaseReadError,
    CaseRecord,
    ProjectError,
    ProjectFormatError,
    ProjectLockedError,
    ProjectWriteError,
    Round,
    Settings,
    StoredPrediction,
)


@dataclass
class OpenedCase:
    """What a viewer needs to show a case: data, the stored prediction, the restored edit."""

    data: CaseData
    prediction: StoredPrediction | None
    edit: SavedEdit | None
    record: CaseRecord


class Project(OrderMixin, RoundsMixin):
    """An open annotation project (holds its lock until :meth:`close`). Use :meth:`create` or
    :meth:`open`. Safe to call from a worker thread and the GUI thread at once."""

    def __init__(self, folder: Path, state: dict, source, lock: store.LockHolder):
        self.folder = folder
        self.source = source
        self._lock = lock
        self._mutex = threading.RLock()  # in-memory state; held only briefly
        self._io = threading.RLock()  # file writes, one at a time; taken before _mutex, never after
        self.settings = Settings(**state.get("settings", {}))
        self.rounds = [Round(**r) for r in state.get("rounds", [])]
        self.current_model: str | None = state.get("current_model")
        self.current_case: str | None = state.get("current_case")
        self.created: str = state.get("created") or store.now_iso()
        self._records = {r["case_id"]: CaseRecord(**r) for r in state.get("cases", [])}
        self._pending: dict[str, SavedEdit] = {}
        self._unsaved_predictions: dict[str, StoredPrediction] = {}
        self._dirty = False
        self.closed = False

    # ----------------------------------------------------------------------- create / open

    @classmethod
    def create(
        cls,
        source: str | os.PathLike,
        project_folder: str | os.PathLike,
        *,
        order: str = "listed",
        spacing=None,
        round_every: int = 3,
    ) -> Project:
        """A new project over ``source`` (LGG root or NIfTI folder) in ``project_folder``."""
        src = sources.detect_source(source)
        folder = Path(project_folder)
        sources.check_separate(src.root, folder)
        if (folder / store.PROJECT_FILE).exists():
            raise ProjectError(f"{folder}: already holds a project; open it instead")
        if folder.is_dir() and any(folder.iterdir()):
            raise ProjectError(f"{folder}: holds other files; choose a new or empty project folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store.write_error(folder, "create the project folder", exc) from exc
        store.check_order(order)
        lock = store.acquire_lock(folder)
        settings = Settings(order, False, list(spacing) if spacing else None, round_every)
        state = {"settings": asdict(settings), "cases": []}
        project = cls(folder, state, src, lock)
        try:
            project._add_cases(src.list_cases())
            project._write_state()
        except BaseException:
            project.close(force=True)
            raise
        return project

    @classmethod
    def open(cls, project_folder: str | os.PathLike, *, take_over: bool = False) -> Project:
        """Open an existing project; see :attr:`missing_cases` when its source moved."""
        folder = Path(project_folder)
        store.read_project_file(folder)  # not a project: say so before touching the lock
        lock = store.acquire_lock(folder, take_over)
        try:
            state = store.read_project_file(folder)  # as its last holder left it
            source = sources.source_from_state(folder, state)
            project = cls(folder, state, source, lock)
            project._recover()
        except BaseException:
            store.release_lock(folder, lock)
            raise
        return project

    def close(self, force: bool = False) -> None:
        """Write what is pending and release the lock. Raises ProjectWriteError (keeping the
        lock and the queued edits) when edits cannot be written, unless ``force``."""
        if self.closed:
            return
        try:
            self.flush()
        except ProjectWriteError:
            if not force:
                raise
        store.release_lock(self.folder, self._lock)
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(force=exc[0] is not None)

    def _add_cases(self, ids: list[str]) -> list[str]:
        new = [i for i in ids if i not in self._records]
        for case_id in new:
            self._records[case_id] = self._check(CaseRecord(case_id))
        return new

    def _check(self, record: CaseRecord) -> CaseRecord:
        try:
            self.source.check(record.case_id)
        except CaseReadError as exc:
            record.error = str(exc)
        return record

    def _recover(self) -> None:
        """Bring the table in line with the folder after a kill: edits and predictions on disk
        win over the table, interrupted folder swaps are undone, missing cases are flagged."""
        from .atomic import clean_stale

        for folder in (self.folder, self.folder / "predictions"):
            clean_stale(folder)  # staged files of a killed process (corrections: see below)
        listed = self._list_source()
        present = set(listed)
        self._add_cases(listed)  # cases added to the source since
        for case_id, record in self._records.items():
            record.missing = case_id not in present
            store.recover_interrupted_swap(self.folder / "corrections", case_id)
            info = self.source.edit_info(self.correction_folder(case_id))
            if info is not None:
                if info.get("whole_volume_reviewed"):
                    record.status = "done"
                elif record.status in NOT_OPENED:
                    record.status = "in review"
                record.last_edited = max(record.last_edited or "", info.get("created", ""))
            elif record.status == "new" and self.prediction_path(case_id).exists():
                record.status = "predicted"

    def _list_source(self) -> list[str]:
        try:
            return self.source.list_cases()
        except (ProjectError, ValueError, OSError):
            return []

    # ----------------------------------------------------------------------- the source

    @property
    def missing_cases(self) -> list[str]:
        """Cases of the table the source no longer has (the source moved or a case was deleted)."""
        return [r.case_id for r in self._records.values() if r.missing]

    def relink(self, new_source: str | os.PathLike, allow_missing: bool = False) -> list[str]:
        """Point the project at a moved source. Refuses a folder lacking the project's cases
        (unless ``allow_missing``); returns the ids of cases new to the project."""
        src = sources.detect_source(new_source)
        sources.check_separate(src.root, self.folder)
        if src.kind != self.source.kind:
            raise ProjectError(
                f"{src.root}: holds {src.kind} cases, this project {self.source.kind}"
            )
        found = src.list_cases()
        absent = [i for i in self._records if i not in set(found)]
        if len(absent) == len(self._records) or (absent and not allow_missing):
            raise ProjectError(
                f"{src.root}: lacks {len(absent)} of this project's {len(self._records)} cases "
                f"(e.g. {', '.join(absent[:3])}); is it the same data?"
            )
        with self._mutex:
            self.source = src
            for record in self._records.values():
                record.missing = record.case_id in absent
                record.error = None  # read errors are checked again in the new place
            new = self._add_cases(found)
            for record in self._records.values():
                if not record.missing and record.case_id not in new:
                    self._check(record)
        self._save_state_or_mark()
        return new

    # ----------------------------------------------------------------------- the table

    def record(self, case_id: str) -> CaseRecord:
        """A copy of one row."""
        with self._mutex:
            r = self._rec(case_id)
            return replace(r, pending=case_id in self._pending)

    def rows(self, show_dice: bool | None = None) -> list[CaseRecord]:
        """Copies of the rows in the chosen order; ``dice`` blanked unless shown."""
        show = self.settings.show_dice if show_dice is None else show_dice
        with self._mutex:
            out = [self.record(i) for i in self.ordered_ids()]
        return out if show else [replace(r, dice=None) for r in out]

    def _rec(self, case_id: str) -> CaseRecord:
        if case_id not in self._records:
            raise KeyError(f"{case_id}: not a case of the project in {self.folder}")
        return self._records[case_id]

    # ----------------------------------------------------------------------- paths

    def correction_folder(self, case_id: str) -> Path:
        return self.folder / "corrections" / case_id

    def prediction_path(self, case_id: str) -> Path:
        return self.folder / "predictions" / f"{case_id}.npz"

    # ----------------------------------------------------------------------- cases

    def load_case(self, case_id: str) -> CaseData:
        """Read a case from the source; a failure is recorded on the row and re-raised."""
        record = self._rec(case_id)
        if record.missing:  # not the case's fault: the source moved
            raise CaseReadError(
                f"{case_id}: not found in the data source {self.source.root} (moved? relink it)"
            )
        try:
            with self._io:  # an adapter keeps the case it read last for its saves: one at a time
                data = self.source.load(case_id)
        except CaseReadError as exc:
            with self._mutex:
                record.error = str(exc)
            self._save_state_or_mark()
            raise
        with self._mutex:
            changed = record.error is not None
            record.error = None
            spacing = data.spacing or self.settings.spacing
            record.spacing = list(spacing) if spacing else None
            record.has_expert = data.expert_mask is not None
            record.shape = [int(n) for n in np.shape(data.image)[:3]]
        if changed:
            self._save_state_or_mark()
        return data

    def open_case(self, case_id: str, data: CaseData | None = None) -> OpenedCase:
        """Load a case for viewing with its prediction and its latest edit (the queued one if it
        is not written yet); marks it in review. ``data``: the case as read ahead (prefetch)."""
        data = data if data is not None else self.load_case(case_id)
        prediction = self.prediction(case_id)
        edit = self.edit(case_id)
        with self._mutex:
            record = self._records[case_id]
            if record.status in NOT_OPENED:
                record.status = "in review"
            self.current_case = case_id
        self._save_state_or_mark()
        return OpenedCase(data, prediction, edit, self.record(case_id))

    def prediction(self, case_id: str) -> StoredPrediction | None:
        if case_id in self._unsaved_predictions:
            return self._unsaved_predictions[case_id]
        path = self.prediction_path(case_id)
        return store.load_prediction(path) if path.exists() else None

    def edit(self, case_id: str) -> SavedEdit | None:
        """The latest edit of a case: queued in memory, else saved in the project, else None."""
        with self._mutex:
            if case_id in self._pending:
                return self._pending[case_id]
        folder = self.correction_folder(case_id)
        if self.source.edit_info(folder) is None:
            return None
        with self._io:
            return self.source.read_edit(case_id, folder)

    def predict(
        self, case_id: str, segmenter, progress=None, cancel=None, data: CaseData | None = None
    ) -> StoredPrediction:
        """Run ``segmenter`` (an inference.Segmenter) on a case (``data``: as read already) and
        keep the result in the project; the row gets the model, uncertainty, volume and (hidden)
        Dice."""
        from .metrics import dice
        from .uncertainty import slice_uncertainty

        self._check_open()
        data = data if data is not None else self.load_case(case_id)
        seg = self.source.segment(segmenter, data, progress, cancel)
        pred = StoredPrediction(
            mask=seg.mask.astype(np.uint8),
            prob_u8=np.round(seg.prob * 255).astype(np.uint8),
            slice_uncertainty=slice_uncertainty(seg.prob).astype(np.float32),
            model=seg.model or getattr(segmenter, "name", ""),
            threshold=seg.threshold,
            postprocess=seg.postprocess,
            created=store.now_iso(),
        )
        edited = case_id in self._pending or self.source.edit_info(self.correction_folder(case_id))
        with self._mutex:
            record = self._records[case_id]
            record.uncertainty = pred.uncertainty
            if data.expert_mask is not None:
                record.dice = float(dice(pred.mask, data.expert_mask))
            if record.status == "new":
                record.status = "predicted"
            if record.status in NOT_OPENED or not edited:  # an edit keeps the model it began from
                record.model = pred.model
                self._set_volume(record, pred.mask)
            self.current_model = self.current_model or pred.model
            self._unsaved_predictions[case_id] = pred  # open_case finds it even if unwritten
            self._dirty = True
        with self._io:
            self._check_open()  # closed while the network ran: the lock is gone, write nothing
            try:
                self.prediction_path(case_id).parent.mkdir(exist_ok=True)
                store.save_prediction(self.prediction_path(case_id), pred)
            except OSError as exc:
                raise store.write_error(
                    self.folder, f"save the prediction of {case_id}", exc
                ) from exc
            with self._mutex:
                if self._unsaved_predictions.get(case_id) is pred:
                    del self._unsaved_predictions[case_id]
            self._save_state_or_mark()
        return pred

    def _set_volume(self, record: CaseRecord, mask: np.ndarray) -> None:
        record.volume_voxels = int(np.count_nonzero(mask))
        spacing = record.spacing or self.settings.spacing
        record.volume_ml = (
            record.volume_voxels * float(np.prod(spacing)) / 1000.0 if spacing else None
        )

    # ----------------------------------------------------------------------- edits

    def save_edit(
        self, case_id: str, mask, reviewed_slices=(), whole_volume_reviewed: bool = False
    ) -> None:
        """Autosave a person's mask of a case into the project folder, atomically. If it cannot
        be written the edit stays queued (newest per case) and ProjectWriteError says why."""
        record = self._rec(case_id)
        mask = np.asarray(mask)
        if record.shape and list(mask.shape) != record.shape:
            raise ValueError(
                f"{case_id}: the mask has shape {mask.shape}, the case {tuple(record.shape)}; "
                "refusing to save a mask of another case"
            )
        with self._mutex:
            whole = whole_volume_reviewed or record.status == "done"
            edit = SavedEdit(
                (mask > 0).astype(np.uint8),
                sorted({int(z) for z in reviewed_slices}),
                whole,
                record.model,
                store.now_iso(),
            )
            self._pending[case_id] = edit
            if record.status in NOT_OPENED:
                record.status = "in review"
            record.last_edited = edit.saved_at
            self._set_volume(record, edit.mask)
            self._dirty = True
        self.flush()

    def done(self, case_id: str, mask=None) -> None:
        """Mark the whole case reviewed and save it so (``mask`` defaults to the latest edit,
        else the stored prediction)."""
        if mask is None:
            latest = self.edit(case_id) or self.prediction(case_id)
            if latest is None:
                raise ProjectError(f"{case_id}: nothing to mark done (no prediction, no edit)")
            mask = latest.mask
        z = int(np.shape(mask)[0])
        with self._mutex:
            self._rec(case_id).status = "done"
        self.save_edit(case_id, mask, range(z), whole_volume_reviewed=True)

    @property
    def pending_edits(self) -> list[str]:
        """Cases whose latest edit waits in memory to be written."""
        with self._mutex:
            return list(self._pending)

    def flush(self) -> None:
        """Write queued edits and the table; ProjectWriteError (edits kept) when it cannot."""
        with self._io:
            first_error = None
            with self._mutex:
                pending = list(self._pending.items())
            for case_id, edit in pending:
                folder = self.correction_folder(case_id)
                try:
                    folder.parent.mkdir(exist_ok=True)
                    self.source.save_edit(case_id, folder, edit)
                except (OSError, ValueError) as exc:  # ValueError: e.g. the source moved away
                    first_error = first_error or store.write_error(
                        self.folder, f"save the edit of {case_id}", exc, kept=True
                    )
                    continue
                with self._mutex:
                    if self._pending.get(case_id) is edit:  # a newer one may have come meanwhile
                        del self._pending[case_id]
            if self._dirty:
                try:
                    self._write_state()
                except OSError as exc:
                    first_error = first_error or store.write_error(
                        self.folder, "save the case table", exc
                    )
            if first_error is not None:
                raise first_error

    def _save_state_or_mark(self) -> None:
        """Write the table; when that fails keep it dirty for the next flush (the caller's own
        work succeeded, and the table is rebuilt from disk on open anyway)."""
        self._dirty = True
        with contextlib.suppress(OSError):
            self._write_state()

    def _check_open(self) -> None:
        if self.closed:
            raise ProjectError(f"{self.folder}: the project was closed")

    def _write_state(self) -> None:
        with self._io:
            if self.closed:  # a worker finishing after close: the lock may be someone else's
                return
            with self._mutex:
                state = self._state()
                self._dirty = False
            try:
                store.write_json_atomic(self.folder / store.PROJECT_FILE, state)
            except OSError:
                self._dirty = True
                raise

    def _state(self) -> dict:
        return {
            "format": store.PROJECT_FORMAT,
            "version": store.PROJECT_VERSION,
            "created": self.created,
            "source": sources.source_entry(self.source, self.folder),
            "settings": asdict(self.settings),
            "current_model": self.current_model,
            "current_case": self.current_case,
            "rounds": [asdict(r) for r in self.rounds],
            "cases": [r.to_json() for r in self._records.values()],
        }
