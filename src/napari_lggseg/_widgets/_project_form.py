"""The Annotation project dock's form and case table: magicgui widgets addressable by name
(``widget.form.nav.next.value``), and one hand-built table (magicgui's Table has no row
double-click). Views only: the dock (:mod:`._project`) fills them from the project."""

from __future__ import annotations

from datetime import datetime

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, PushButton, SpinBox
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from ._common import device_choices
from ._forms import _narrow, _row

# napari's defaults use plain letters, digits, Ctrl+... and a few Shift+letters (A, L, P, V);
# these Shift+letters are free in napari 0.9 (viewer, layers and app-model key bindings)
SHORTCUTS = {
    "next": "Shift-N",
    "previous": "Shift-B",
    "done": "Shift-D",
    "mark": "Shift-R",
    "uncertain": "Shift-U",
    "run": "Shift-G",
}
ORDER_CHOICES = [("as listed", "listed"), ("most uncertain first", "uncertain")]


def _key(action: str) -> str:
    return SHORTCUTS[action].replace("-", "+")


def _case_rows() -> tuple[Container, Container]:
    """The worklist's buttons: Previous / Next / Done, then the slice tools, Run and Cancel;
    each tooltip names its shortcut."""
    nav = _row(
        "nav",
        " ",
        PushButton(
            name="previous", text="◀ Previous", tooltip=f"The case before ({_key('previous')})"
        ),
        PushButton(
            name="next", text="Next ▶", tooltip=f"Save and open the next case ({_key('next')})"
        ),
        PushButton(
            name="done",
            text="Done ✓",
            tooltip=f"The whole case is reviewed: save it as done and open the next "
            f"({_key('done')})",
        ),
    )
    tools = _row(
        "tools",
        " ",
        PushButton(
            name="mark",
            text="Mark slice",
            tooltip=f"The mask on this slice is right as it is ({_key('mark')})",
        ),
        PushButton(
            name="uncertain",
            text="Uncertain slice",
            tooltip=f"Go to the next slice the model is least sure of, not yet reviewed "
            f"({_key('uncertain')})",
        ),
        PushButton(
            name="run",
            text="Run",
            tooltip=f"Predict the open case again with the project's model, unless you have "
            f"edited it ({_key('run')})",
        ),
        PushButton(name="cancel", text="Cancel", tooltip="Stop the background work"),
    )
    return nav, tools


def project_form() -> Container:
    """Source and project folder, model, order and rounds, then the worklist's buttons."""
    source = FileEdit(
        name="source",
        mode="d",
        label="Data source",
        tooltip="A folder of LGG patient folders (kaggle_3m layout) or of NIfTI/DICOM case "
        "folders; only read, never written",
    )
    folder = FileEdit(
        name="folder",
        mode="d",
        label="Project folder",
        tooltip="Where the project keeps predictions, your corrections and its models",
    )
    folder_buttons = _row(
        "folder_buttons",
        " ",
        PushButton(name="create", text="Create", tooltip="A new project over the data source"),
        PushButton(name="open", text="Open", tooltip="Open the project in the project folder"),
        PushButton(
            name="relink",
            text="Relink",
            visible=False,
            tooltip="The data moved: point the project at the folder now in 'Data source'",
        ),
        PushButton(
            name="take_over",
            text="Take over",
            visible=False,
            tooltip="Open although another machine holds the project: only if napari is no "
            "longer running there",
        ),
    )
    model = ComboBox(name="model", label="Model", tooltip="The model that predicts the cases")
    refresh = PushButton(name="refresh_models", text="↻", tooltip="Re-read the model store")
    order = ComboBox(
        name="order",
        label="Next",
        choices=ORDER_CHOICES,
        tooltip="Which case Next opens: as listed, or the one the model is least sure of "
        "(active learning)",
    )
    round_every = SpinBox(
        name="round_every",
        label="Round every (done)",
        value=3,
        min=0,
        max=1000,
        tooltip="Fine-tune the project's model on all done cases after every k done cases, "
        "in the background; 0 = off",
    )
    show_dice = CheckBox(
        name="show_dice",
        text="show Dice against the expert mask",
        tooltip="Hidden by default, so that it does not bias your corrections",
    )
    nav, tools = _case_rows()
    return _narrow(
        Container(
            name="project_form",
            widgets=[
                source,
                folder,
                folder_buttons,
                _row("model_row", "Model", model, refresh),
                ComboBox(name="device", label="Device", choices=device_choices()),
                order,
                round_every,
                show_dice,
                nav,
                tools,
            ],
        )
    )


# --------------------------------------------------------------------------- the case table

COLUMNS = ("case", "status", "volume", "uncertainty", "model", "last edited", "Dice", "error")
DICE_COLUMN = COLUMNS.index("Dice")


def _when(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


def row_texts(r) -> list[str]:
    """One CaseRecord as the table shows it."""
    if r.volume_ml is not None:
        volume = f"{r.volume_ml:.2f} mL"
    else:
        volume = "" if r.volume_voxels is None else f"{r.volume_voxels:,} vx"
    status = r.status + (" (unsaved)" if r.pending else "")
    error = "missing from the data source" if r.missing else (r.error or "")
    return [
        r.case_id,
        status,
        volume,
        "" if r.uncertainty is None else f"{r.uncertainty:.0f}",
        r.model or "",
        _when(r.last_edited),
        "" if r.dice is None else f"{r.dice:.3f}",
        error,
    ]


class CaseTable(QTableWidget):
    """The project's cases, one row each; double-click (or Enter) asks to open one."""

    open_requested = Signal(str)

    def __init__(self):
        super().__init__(0, len(COLUMNS), objectName="cases")
        self.setHorizontalHeaderLabels(list(COLUMNS))
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.setColumnHidden(DICE_COLUMN, True)
        self.setMinimumHeight(160)
        self.setToolTip(
            "Double-click a case to open it. Uncertainty: the expected number of wrongly "
            "labelled voxels if the model's probabilities are calibrated."
        )
        self.cellDoubleClicked.connect(lambda row, _col: self._request(row))
        self.ids: list[str] = []

    def _request(self, row: int) -> None:
        if 0 <= row < len(self.ids):
            self.open_requested.emit(self.ids[row])

    def show_rows(self, rows, current: str | None, show_dice: bool) -> None:
        self.setColumnHidden(DICE_COLUMN, not show_dice)
        self.ids = [r.case_id for r in rows]
        self.setUpdatesEnabled(False)
        try:
            self.setRowCount(len(rows))
            for i, r in enumerate(rows):
                for j, text in enumerate(row_texts(r)):
                    item = self.item(i, j)
                    if item is None:
                        item = QTableWidgetItem()
                        self.setItem(i, j, item)
                    if item.text() != text:
                        item.setText(text)
                    item.setToolTip(text if j == len(COLUMNS) - 1 else "")
                font = self.item(i, 0).font()
                if font.bold() != (r.case_id == current):
                    font.setBold(r.case_id == current)
                    for j in range(len(COLUMNS)):
                        self.item(i, j).setFont(font)
        finally:
            self.setUpdatesEnabled(True)

    def text(self, case_id: str, column: str) -> str:
        """What the table shows for ``case_id`` in ``column`` (tests, scripts)."""
        item = self.item(self.ids.index(case_id), COLUMNS.index(column))
        return item.text() if item is not None else ""

    def row_of(self, case_id: str) -> int:
        return self.ids.index(case_id)

    def keyPressEvent(self, event) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self._request(self.currentRow())
            return
        super().keyPressEvent(event)
