"""Take docs/screenshot_patient.png: a real napari window with a real LGG patient, segmented by
the default model through the Segment tumour widget, beside the expert ground truth.

    xvfb-run -a .venv/bin/python scripts/screenshot_patient.py [PATIENT_FOLDER]

The PNG is a rendering of one slice (allowed in the repository); no image file is copied.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = (
    ROOT.parent / "shared" / "lgg" / "kaggle_3m" / "TCGA_CS_4942_19970222"
)  # a test-split patient


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("patient", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot_patient.png")
    args = ap.parse_args()

    from qtpy.QtWidgets import QApplication

    from napari_lggseg.demo import make_demo_viewer

    viewer = make_demo_viewer(str(args.patient), show=True, segment=True)
    viewer.window._qt_window.resize(1400, 900)
    dock = next(w for name, w in viewer.window._dock_widgets.items() if "Segment" in name)
    seg = dock.widget()
    app = QApplication.instance()
    while seg.is_running:
        app.processEvents()
    for _ in range(10):
        app.processEvents()
    truth = next(layer for layer in viewer.layers if layer.name.endswith("ground truth"))
    pred = next(layer for layer in viewer.layers if layer.name.endswith("prediction"))
    truth.contour = 2
    truth.opacity = 1.0
    pred.opacity = 0.5
    viewer.dims.set_point(0, int(np.asarray(truth.data).sum(axis=(1, 2)).argmax()))
    viewer.layers.selection = {pred}
    for _ in range(20):
        app.processEvents()
    viewer.screenshot(path=str(args.out), canvas_only=False, flash=False)
    print(f"wrote {args.out}")
    viewer.close()


if __name__ == "__main__":
    main()
