"""Take docs/screenshot_clicks.png at napari's default window size: the synthetic sample (or a
patient folder) segmented with the default model, then corrected with the simulated protocol's
next clicks in the Click correction dock (positive lime, negative magenta), on the slice of the
first click.

    xvfb-run -a .venv/bin/python scripts/screenshot_clicks.py [--clicks 3] [--path FOLDER] [--out docs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _spin(app, until=None, rounds: int = 20) -> None:
    import time

    t0 = time.monotonic()
    while until is not None and not until():
        app.processEvents()
        time.sleep(0.01)
        if time.monotonic() - t0 > 300:
            raise TimeoutError("the viewer did not finish in 5 minutes")
    for _ in range(rounds):
        app.processEvents()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clicks", type=int, default=3)
    ap.add_argument("--path", help="an LGG patient folder (default: the synthetic sample)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--zoom", type=float, default=2.0, help="camera zoom around the first click")
    ap.add_argument("--size", default="1089x630", help="window size (napari 0.9's default)")
    args = ap.parse_args()

    from qtpy.QtWidgets import QApplication

    from napari_lggseg.click_sim import next_click
    from napari_lggseg.demo import make_demo_viewer
    from napari_lggseg.layer_meta import PLUGIN, Role, read_meta

    viewer = make_demo_viewer(args.path, show=True)
    app = QApplication.instance()
    width, height = (int(v) for v in args.size.split("x"))
    viewer.window._qt_window.resize(width, height)
    docks = {n.split(" (")[0]: d for n, d in viewer.window._dock_widgets.items()}
    seg = docks["Segment tumour"].widget()
    seg.run()
    _spin(app, lambda: not seg.is_running)
    pred = seg.result_layer()
    truth_layer = next(lyr for lyr in viewer.layers if read_meta(lyr)["role"] == Role.GROUND_TRUTH)
    truth = np.asarray(truth_layer.data) > 0
    truth_layer.visible = False
    dock, clicks = viewer.window.add_plugin_dock_widget(PLUGIN, "Click correction", tabify=True)
    dock.raise_()
    ctrl = clicks.start()
    _spin(app, lambda: not clicks.is_busy and "Ready" in clicks.status.text())
    for _ in range(args.clicks):
        found = next_click(np.asarray(pred.data) > 0, truth)
        if found is None:
            break
        (z, y, x), positive = found
        ctrl.add_click(z, y, x, positive)
        _spin(app, lambda: not clicks.is_busy and all(c.state == "applied" for c in ctrl.entries))
        print(f"click at {(z, y, x)} {'+' if positive else '-'}: {clicks.status.text()}")
    if ctrl.entries:  # the first click's slice, zoomed in around it
        first = ctrl.entries[0]
        viewer.dims.set_current_step(0, first.z)
        world = ctrl.points.data_to_world([first.z, first.y, first.x])
        viewer.camera.center = (world[1], world[2])
        viewer.camera.zoom *= args.zoom
    viewer.layers.selection.active = ctrl.points
    _spin(app)
    path = args.out / "screenshot_clicks.png"
    tmp = path.with_suffix(".tmp.png")
    viewer.screenshot(path=str(tmp), canvas_only=False, flash=False)
    tmp.replace(path)
    print(f"wrote {path}")
    viewer.close()


if __name__ == "__main__":
    main()
