"""The Shape panel of Segment tumour: the study's shape features of the mask the person works on
(:func:`napari_lggseg.shape.study_features`: volume, bounding ellipsoid volume ratio, angular SD,
margin fluctuation), "—" where a feature is not defined.

It follows the mask: a paint stroke (or a new mask) restarts a 0.5 s timer, so a brush stroke
costs one computation, not one per dab. The features take ~0.15 s for a 256 x 256 x 30 mask of
44,000 tumour voxels on this project's loaded 2-core AVX2 machine (far above a 30 ms GUI
budget), so they are computed in a napari thread worker from a copy of the mask; a change during a computation runs one more
when it ends, and only the latest mask's figures are shown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
from napari.qt.threading import create_worker
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFormLayout, QGroupBox, QLabel

from ._common import status_label

FIELDS = (
    ("volume_ml", "Volume"),
    ("bounding_ellipsoid_volume_ratio", "Bounding ellipsoid ratio"),
    ("angular_sd", "Angular SD"),
    ("margin_fluctuation", "Margin fluctuation"),
)
NOT_DEFINED = "—"
DELAY_MS = 500


def feature_text(key: str, value) -> str:
    if value is None:
        return NOT_DEFINED
    return f"{value:.2f} mL" if key == "volume_ml" else f"{value:.3f}"


def _features(mask: np.ndarray, spacing):
    from ..shape import study_features

    return study_features(mask, spacing)


class ShapePanel(QGroupBox):
    """``target()`` gives the mask layer to describe (or None); ``spacing()`` its voxel spacing in
    mm (None: unknown, so no volume in mL; the three features do not need it)."""

    def __init__(self, target: Callable, spacing: Callable, parent=None):
        super().__init__("Shape", parent, objectName="shape")
        self._target, self._spacing = target, spacing
        self.source_label = status_label("shape_source")
        self.labels: dict[str, QLabel] = {}
        form = QFormLayout(self)
        form.addRow(self.source_label)
        for key, text in FIELDS:
            self.labels[key] = QLabel(NOT_DEFINED, objectName=f"shape_{key}")
            form.addRow(text, self.labels[key])
        self.values: dict = {}  # the figures on screen, by feature name
        self.layer_name: str | None = None  # the layer they describe
        self.timer = QTimer(self, singleShot=True, interval=DELAY_MS)
        self.timer.timeout.connect(self.update_now)
        self.closed = False
        self._watched = None
        self._worker = None
        self._again = False

    @property
    def settled(self) -> bool:
        """No change waits to be measured and no measurement runs."""
        return not self.timer.isActive() and self._worker is None and not self._again

    def schedule(self, *_) -> None:
        """Measure again in 0.5 s (restarted by every further change)."""
        if not self.closed:
            self.timer.start()

    def update_now(self) -> None:
        if self.closed:
            return
        self.timer.stop()
        layer = self._target()
        self._watch(layer)
        if self._worker is not None:
            self._again = True
            return
        self._again = False
        if layer is None:
            self._show(None, {})
            return
        mask = np.asarray(layer.data) > 0  # a copy: painting goes on meanwhile
        spacing = self._spacing()
        worker = create_worker(_features, mask, spacing or (1.0, 1.0, 1.0), _start_thread=False)
        name = layer.name
        worker.returned.connect(lambda feats: self._show(name, feats, spacing is not None))
        worker.errored.connect(lambda exc: self._failed(name, exc))
        worker.finished.connect(self._finished)
        self._worker = worker
        worker.start()

    def _finished(self) -> None:
        self._worker = None
        if not self.closed and self._again:
            self.update_now()

    def _show(self, name, feats: dict, with_ml: bool = True) -> None:
        if self.closed or self._again:
            return  # the mask changed meanwhile: the next figures come
        feats = dict(feats)
        if not with_ml and "volume_ml" in feats:
            feats["volume_ml"] = None  # no voxel spacing: no mL (set one in Spacing)
        self.values, self.layer_name = feats, name
        self.source_label.setText(f"of '{name}'" if name else "No mask yet.")
        for key, label in self.labels.items():
            label.setText(feature_text(key, feats.get(key)))
        self.labels["volume_ml"].setToolTip(
            "" if with_ml else "Give the voxel spacing (Spacing, z, y, x) for the volume in mL"
        )

    def _failed(self, name, exc) -> None:
        if not self.closed:
            self.source_label.setText(f"Shape of '{name}' not measured: {exc}")

    def _watch(self, layer) -> None:
        """Follow the paint strokes and data changes of ``layer`` only."""
        if layer is self._watched:
            return
        self._unwatch()
        if layer is not None:
            layer.events.paint.connect(self.schedule)
            layer.events.data.connect(self.schedule)
        self._watched = layer

    def _unwatch(self) -> None:
        old, self._watched = self._watched, None
        if old is not None:
            old.events.paint.disconnect(self.schedule)
            old.events.data.disconnect(self.schedule)

    def close_panel(self) -> None:
        """The widget is going away: no more measurements, no more connections."""
        self.closed = True
        with contextlib.suppress(RuntimeError):  # Qt already deleted the timer with the widget
            self.timer.stop()
        self._unwatch()
