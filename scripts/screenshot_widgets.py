"""Take docs/screenshot_segment.png and docs/screenshot_finetune.png at napari's default window
size: the synthetic sample segmented with the default model, three slices corrected with napari's
brush, one fine-tuning epoch; then both docks side by side (docs/screenshot_docks.png).

    xvfb-run -a .venv/bin/python scripts/screenshot_widgets.py [--epochs 1] [--out docs]

The fine-tuned model is deleted afterwards, so the store is left as it was.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _spin(app, until=None, rounds: int = 20) -> None:
    import time

    while until is not None and until():
        app.processEvents()
        time.sleep(0.01)
    for _ in range(rounds):
        app.processEvents()


def _shoot(viewer, app, path: Path) -> None:
    _spin(app)
    tmp = path.with_suffix(".tmp.png")
    viewer.screenshot(path=str(tmp), canvas_only=False, flash=False)
    tmp.replace(path)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument(
        "--size",
        default="1089x630",
        help="window size (default: what napari 0.9 opens with on a fresh profile under Xvfb; "
        "napari otherwise restores the last window's size)",
    )
    args = ap.parse_args()

    from qtpy.QtWidgets import QApplication

    from napari_lggseg.demo import make_demo_viewer
    from napari_lggseg.models import delete_model

    viewer = make_demo_viewer(show=True)
    app = QApplication.instance()
    width, height = (int(v) for v in args.size.split("x"))
    viewer.window._qt_window.resize(width, height)
    docks = {n.split(" (")[0]: d for n, d in viewer.window._dock_widgets.items()}
    seg_dock, ft_dock = docks["Segment tumour"], docks["Fine-tune"]
    seg, ft = seg_dock.widget(), ft_dock.widget()
    print(f"window {viewer.window._qt_window.width()}x{viewer.window._qt_window.height()}")
    seg_dock.raise_()
    seg.run()
    _spin(app, lambda: seg.is_running)
    pred = seg.result_layer()
    mask = np.asarray(pred.data) > 0
    z_best = int(mask.sum(axis=(1, 2)).argmax())
    viewer.dims.set_current_step(0, z_best)
    viewer.layers.selection.active = pred
    _shoot(viewer, app, args.out / "screenshot_segment.png")

    pred.brush_size = 5
    for z in [int(z) for z in np.flatnonzero(mask.any(axis=(1, 2)))[1:4]]:
        ys, xs = np.nonzero(mask[z])
        pred.paint((z, ys[0], xs[0]), 0)
    ft_dock.raise_()
    ft.set_budget(args.epochs, "epochs")
    ft.form.model_name.value = "screenshot-ft"
    ft.run()
    _spin(app, lambda: ft.is_running)
    print(f"fine-tune: {ft.status.text()}")
    _shoot(viewer, app, args.out / "screenshot_finetune.png")

    # both docks side by side: Fine-tune moved out of the tabs, beside Segment tumour
    from qtpy.QtCore import Qt

    window = viewer.window._qt_window
    window.splitDockWidget(seg_dock, ft_dock, Qt.Orientation.Horizontal)
    _shoot(viewer, app, args.out / "screenshot_docks.png")
    if ft.new_model:
        delete_model(ft.new_model)
    viewer.close()


if __name__ == "__main__":
    main()
