"""Take docs/screenshot_sample.png: a real napari window with the sample patient and its mask.

Run under a display, e.g. ``xvfb-run -a .venv/bin/python scripts/screenshot.py``
(add ``--widgets`` to dock the Segment and Fine-tune widgets too).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "docs" / "screenshot_sample.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--widgets", action="store_true", help="dock both widgets")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-lggseg: synthetic sample", show=True)
    viewer.window._qt_window.resize(1280, 800)
    layers = viewer.open_sample("napari-lggseg", "synthetic_patient")
    if args.widgets:
        viewer.window.add_plugin_dock_widget("napari-lggseg", "Segment tumour")
        viewer.window.add_plugin_dock_widget("napari-lggseg", "Fine-tune", tabify=True)
    mask = np.asarray(layers[-1].data)
    viewer.dims.set_point(0, int(mask.sum(axis=(1, 2)).argmax()))  # the slice with most tumour
    viewer.layers.selection = {layers[-1]}
    for _ in range(20):
        QApplication.processEvents()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.png")
    viewer.screenshot(path=str(tmp), canvas_only=False, flash=False)
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    viewer.close()


if __name__ == "__main__":
    main()
