"""The review part of Segment tumour: "Check these slices first" and "Mark slice reviewed".

After a run, the slices where the model is least sure (ranked in the worker by
:func:`napari_lggseg.uncertainty.slices_to_review`) are listed, most uncertain first; clicking or
activating one moves the viewer there, and a slice gets a check mark once it is reviewed. The list
shows one patient's latest result and is rebuilt only for another run: it depends on the
probabilities, not on the threshold. A hand-built list: magicgui has no list of clickable rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from magicgui.widgets import Label, PushButton
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QHBoxLayout, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from ._common import wrapping_list

REVIEWED_MARK = "✓"


@dataclass(frozen=True)
class ReviewRow:
    """One row as the person reads it."""

    z: int
    text: str
    reviewed: bool
    tooltip: str


class ReviewList(QWidget):
    """Slices to check first (clickable), the Mark button and the reviewed-slice count."""

    def __init__(self, go_to_slice: Callable[[int], None], mark_current: Callable[[], object]):
        super().__init__()
        self._go_to_slice = go_to_slice
        self._shown = None  # the result whose slices are listed
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.heading = Label(name="review_heading")
        self.heading.native.setWordWrap(True)
        self.list_widget = wrapping_list(QListWidget(objectName="review_list"))
        self.list_widget.setToolTip(
            "Slices where the model is least sure, most uncertain first: the expected "
            "number of wrong voxels if its probabilities are calibrated. Click to go there."
        )
        self.list_widget.setMinimumHeight(90)
        self.list_widget.setMaximumHeight(150)
        self.list_widget.itemClicked.connect(self._on_item)
        self.list_widget.itemActivated.connect(self._on_item)
        for w in (self.heading.native, self.list_widget):
            w.setVisible(False)
            layout.addWidget(w)

        row = QHBoxLayout()
        self.mark_button = PushButton(text="Mark slice reviewed", name="mark_reviewed")
        self.mark_button.tooltip = (
            "The mask on this slice is right as it is: learn from it when fine-tuning"
        )
        self.mark_button.changed.connect(lambda *_: mark_current())
        self.reviewed_label = Label(name="reviewed")
        self.reviewed_label.native.setWordWrap(True)
        row.addWidget(self.mark_button.native)
        row.addWidget(self.reviewed_label.native, 1)
        layout.addLayout(row)

    # ------------------------------------------------------------------ the list

    def show_result(self, result, reviewed: set[int]) -> None:
        """List ``result``'s slices to check first (None: hide the list); the check marks
        follow ``reviewed``."""
        if result is None:
            self._shown = None
            self.list_widget.clear()
            self.heading.native.setVisible(False)
            self.list_widget.setVisible(False)
            return
        if result is not self._shown:
            self._shown = result
            self.list_widget.clear()
            for z, _score in result.review:
                item = QListWidgetItem()
                item.setData(Qt.ItemDataRole.UserRole, z)
                self.list_widget.addItem(item)
            self.heading.value = (
                "Check these slices first (most uncertain first; click one to go there):"
                if result.review
                else "Check these slices first: none, the model is sure on every slice."
            )
            self.heading.native.setVisible(True)
            self.list_widget.setVisible(bool(result.review))
        files = result.inp.slice_files
        for row, (z, score) in enumerate(result.review):
            item = self.list_widget.item(row)
            name = f" (file {files[z]})" if z < len(files) else ""
            mark = f"{REVIEWED_MARK} " if z in reviewed else ""
            item.setText(f"{mark}slice {z}{name}: ~{score:.0f} uncertain voxels")
            item.setToolTip(
                f"slice {z} in the viewer{name}; "
                + ("reviewed" if z in reviewed else "not reviewed yet")
            )

    def rows(self) -> list[ReviewRow]:
        out = []
        for row in range(self.list_widget.count()):
            item = self.list_widget.item(row)
            z = int(item.data(Qt.ItemDataRole.UserRole))
            reviewed = item.text().startswith(REVIEWED_MARK)
            out.append(ReviewRow(z, item.text(), reviewed, item.toolTip()))
        return out

    def _on_item(self, item) -> None:
        z = item.data(Qt.ItemDataRole.UserRole)
        if z is not None:
            self._go_to_slice(int(z))

    # ------------------------------------------------------------------ the count

    def show_count(self, layer_name: str | None, reviewed: list[int], here: bool) -> None:
        if layer_name is None:
            self.reviewed_label.value = ""
            return
        self.reviewed_label.value = f"{len(reviewed)} reviewed slice(s) in '{layer_name}'" + (
            "; this one is" if here else ""
        )
