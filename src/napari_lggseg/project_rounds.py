"""Fine-tuning rounds of a project (issue #19): which done cases a round learnt from, the
project's current model, which cases to re-predict. No Qt.

A mixin of :class:`napari_lggseg.project.Project` (it uses the project's case table, mutex and
state file).
"""

from __future__ import annotations

from .project_store import NOT_OPENED, Round


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
