"""Placeholder widgets so the manifest is complete; the real Segment and Fine-tune widgets
replace this module."""

from __future__ import annotations

import napari.viewer
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget


class _Placeholder(QWidget):
    _text = ""

    def __init__(self, viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(self._text))


class SegmentWidget(_Placeholder):
    _text = "Segment tumour: not implemented yet"


class FineTuneWidget(_Placeholder):
    _text = "Fine-tune: not implemented yet"
