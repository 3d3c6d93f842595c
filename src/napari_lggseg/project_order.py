"""The worklist's order (as listed or most uncertain first; next, previous and prefetched cases)
and the person's other settings of the project. No Qt.

A mixin of :class:`napari_lggseg.project.Project` (it uses the project's case table, mutex and
settings), kept apart so that the project module stays one screenful of concerns.
"""

from __future__ import annotations

from . import project_store as store


class OrderMixin:
    def set_order(self, order: str) -> None:
        store.check_order(order)
        with self._mutex:
            self.settings.order = order
        self._save_state_or_mark()

    def set_show_dice(self, show: bool) -> None:
        """Show the Dice against the expert mask in :meth:`rows` (off by default: it biases)."""
        with self._mutex:
            self.settings.show_dice = bool(show)
        self._save_state_or_mark()

    def set_round_every(self, k: int) -> None:
        """A fine-tuning round after every ``k`` done cases; 0 turns rounds off."""
        if int(k) != k or k < 0:
            raise ValueError(f"rounds come after every k done cases, k >= 0; got {k!r}")
        with self._mutex:
            self.settings.round_every = int(k)
        self._save_state_or_mark()

    def ordered_ids(self) -> list[str]:
        """Case ids as listed, or most uncertain first (cases without a score after, as listed)."""
        with self._mutex:
            ids = list(self._records)
            if self.settings.order == "uncertain":
                scores = {i: self._records[i].uncertainty for i in ids}
                ids.sort(key=lambda i: (scores[i] is None, -(scores[i] or 0.0)))
            return ids

    def _workable(self, case_id: str) -> bool:
        r = self._records[case_id]
        return not (r.error or r.missing)

    def next_case(self, after: str | None = None) -> str | None:
        """The next case to work on in the chosen order: skips done, unreadable and missing cases
        and wraps around, so no unfinished case is passed over; None when all are done."""
        ids = self.ordered_ids()
        start = ids.index(after) + 1 if after in ids else 0
        for case_id in ids[start:] + ids[:start]:
            r = self._records[case_id]
            if case_id != after and self._workable(case_id) and r.status != "done":
                return case_id
        return None

    def previous_case(self, before: str | None = None) -> str | None:
        """The case before ``before`` in the chosen order, done ones included (going back is how
        a person revisits what they just finished); no wrap-around."""
        ids = self.ordered_ids()
        stop = ids.index(before) if before in ids else len(ids)
        for case_id in reversed(ids[:stop]):
            if self._workable(case_id):
                return case_id
        return None

    def cases_to_prefetch(self, after: str | None = None, n: int = 2) -> list[str]:
        """The next ``n`` cases after ``after`` (wrapping) that need a prediction from the
        current model, for a background prefetch."""
        with self._mutex:
            ids = self.ordered_ids()
            start = ids.index(after) + 1 if after in ids else 0
            todo = set(self.cases_to_repredict())
            return [i for i in ids[start:] + ids[:start] if i in todo and i != after][:n]
