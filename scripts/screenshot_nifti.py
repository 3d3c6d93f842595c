"""Take docs/screenshot_nifti.png: a real BraTS NIfTI case opened by the plugin's reader in a
real napari window, the axial slice with the most tumour (2-D) beside the 3-D view, ground truth
outlined.

    xvfb-run -a .venv/bin/python scripts/screenshot_nifti.py [CASE_FOLDER]

The PNG is a rendering (allowed in the repository); no scan is copied.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "external" / "brats18" / "Brats18_2013_2_1"


def _settle(app, n: int = 20) -> None:
    for _ in range(n):
        app.processEvents()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("case", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot_nifti.png")
    args = ap.parse_args()

    import imageio.v3 as iio
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(900, 800)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reader's notes (reoriented, ...) are not the point
        viewer.open(args.case, plugin="napari-lggseg")
    app = QApplication.instance()
    cid = args.case.name
    truth, flair = viewer.layers[f"{cid} ground truth"], viewer.layers[f"{cid} FLAIR"]
    truth.contour, truth.opacity = 1, 1.0
    viewer.dims.set_point(0, int(np.asarray(truth.data).sum(axis=(1, 2)).argmax()))
    viewer.layers.selection = {flair}
    _settle(app)
    axial = viewer.screenshot(canvas_only=False, flash=False)
    viewer.dims.ndisplay = 3
    truth.contour, truth.opacity = 0, 0.7
    flair.rendering, flair.attenuation = "attenuated_mip", 0.3
    viewer.scene.camera.angles = (-10, 35, 80)
    viewer.scene.camera.zoom *= 1.1
    _settle(app)
    volume = viewer.screenshot(canvas_only=False, flash=False)
    h = min(axial.shape[0], volume.shape[0])
    iio.imwrite(args.out, np.concatenate([axial[:h], volume[:h]], axis=1))
    print(f"wrote {args.out}")
    viewer.close()


if __name__ == "__main__":
    main()
