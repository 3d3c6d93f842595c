"""Fine-tuning rounds of a project (issue #19): which done cases a round learnt from, the
project's current model, which cases to re-predict. No Qt.

A mixin of :class:`napari_lggseg.project.Project` (it uses the project's case table, mutex and
state file).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .project_store import NOT_OPENED, ProjectError, Round


class RoundsMixin:
    def done_cases(self) -> list[str]:
        return [i for i, r in self._records.items() if r.status == "done"]

    @property
    def done_count_since_last_round(self) -> int:
        """Done cases the last round did not learn from."""
        seen = set(self.rounds[-1].trained_on) if self.rounds else set()
        return sum(1 for i in self.done_cases() if i not in seen)

    def round_due(self) -> bool:
        k = self.settings.round_every
        return k > 0 and self.done_count_since_last_round >= k

    def record_round(self, model: str, trained_on, parent: str | None = None) -> Round:
        """A round made ``model`` from ``trained_on``; it becomes the project's current model."""
        with self._mutex:
            r = Round(model, parent or self.current_model, list(trained_on))
            self.rounds.append(r)
            self.current_model = model
        self._save_state_or_mark()
        return r

    def cases_to_repredict(self) -> list[str]:
        """Cases not yet opened without a prediction from the current model (the one the
        project predicts with: the first one used, then each round's), in order."""
        with self._mutex:
            return [
                i
                for i in self.ordered_ids()
                if self._workable(i)
                and self._records[i].status in NOT_OPENED
                and (self.current_model is None or self._records[i].model != self.current_model)
            ]

    def use_model(self, model: str) -> None:
        """Predict with ``model`` from now on (the person chose another one): the cases not yet
        opened show up in :meth:`cases_to_repredict`."""
        with self._mutex:
            self.current_model = model
        self._save_state_or_mark()

    def record_model(self, case_id: str, model: str) -> None:
        with self._mutex:
            self._rec(case_id).model = model
        self._save_state_or_mark()


# --------------------------------------------------------------------------- a round


def round_volumes(project, case_ids) -> list:
    """Training volumes of ``case_ids``: each case's images with its saved corrected mask (its
    reviewed slices, all of them once done), on the slices the network is shown (thin-slice
    scans resampled as in :func:`train_data.on_network_slices`). Cases without an edit are
    left out."""
    from .train_data import TrainVolume, on_network_slices

    out = []
    for case_id in case_ids:
        edit = project.edit(case_id)
        if edit is None:
            continue
        data = project.load_case(case_id)
        labelled = None
        if not edit.whole_volume_reviewed:
            labelled = np.zeros(len(edit.mask), bool)
            labelled[[z for z in edit.reviewed_slices if 0 <= z < len(labelled)]] = True
        image, mask = data.image, edit.mask
        if data.spacing is not None:  # scans: the network's slices; LGG slices are already so
            image, mask, labelled = on_network_slices(image, mask, labelled, data.spacing[0])
        folder = project.correction_folder(case_id)
        out.append(TrainVolume(case_id, image, mask, labelled, "corrections", folder))
    return out


def round_model_name(project) -> str:
    """``<project folder>-r<N>``: the project's N-th round (the store adds ``-v2`` when taken)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(project.folder).name).strip("-._")[:60]
    return f"{stem or 'project'}-r{len(project.rounds) + 1}"


def run_round(
    project, *, minutes: float | None = None, progress=None, cancel=None, config=None
) -> Round | None:
    """A fine-tuning round of ``project``: its current model (else the default model) fine-tuned
    on all its done cases through :func:`finetune.fine_tune` (the round every path runs), saved
    in the model store as :func:`round_model_name` with its parent kept, and recorded as the
    project's current model. ``minutes`` replaces the round's time budget (``config``, a whole
    TrainConfig, is for scripts that lift the clock cap). Cancelled: returns None, nothing saved
    or recorded. Runs in a worker thread (no Qt)."""
    from . import finetune, models

    trained_on = project.done_cases()
    volumes = round_volumes(project, trained_on)
    if not volumes:
        raise ProjectError(f"{project.folder}: no done case to learn from yet")
    parent = project.current_model or models.default_model_name()
    cfg = config or finetune.fine_tune_config(len(volumes), minutes=minutes)
    info, result = finetune.fine_tune(
        parent,
        volumes,
        config=cfg,
        name=round_model_name(project),
        progress=progress,
        cancel=cancel,
        card_extra={
            "project": str(Path(project.folder).resolve()),
            "round": len(project.rounds) + 1,
        },
    )
    if info is None:  # cancelled
        return None
    return project.record_round(info.name, [v.patient_id for v in volumes], parent)
