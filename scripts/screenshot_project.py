"""Take docs/screenshot_project.png: the Annotation project dock with a project open, from a real
napari window. The cohort is synthetic (five patients written by code into a temporary folder, in
the LGG layout), predicted with the store's default model; one case is corrected and marked done,
the next one is open.

    xvfb-run -a .venv/bin/python scripts/screenshot_project.py [--out docs] [--size 1400x860]

Nothing is written outside the temporary folder but the PNG (the project's models are untouched:
rounds are off).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_cohort(root: Path, n: int = 5) -> list[str]:
    """``n`` synthetic patients in the kaggle_3m layout (slices and expert masks)."""
    import numpy as np
    import tifffile

    from napari_lggseg.synthetic import make_synthetic_patient

    ids = []
    for i in range(1, n + 1):
        pid = f"TCGA_SY_{i:04d}_20000101"
        image, mask = make_synthetic_patient(seed=10 + i, n_slices=16 + 2 * i, size=256)
        folder = root / pid
        folder.mkdir(parents=True)
        for z in range(len(image)):
            tifffile.imwrite(folder / f"{pid}_{z + 1}.tif", image[z], photometric="rgb")
            tifffile.imwrite(
                folder / f"{pid}_{z + 1}_mask.tif", (mask[z] > 0).astype(np.uint8) * 255
            )
        ids.append(pid)
    return ids


def spin(app, until=None, rounds: int = 30) -> None:
    while until is not None and not until():
        app.processEvents()
        time.sleep(0.01)
    for _ in range(rounds):
        app.processEvents()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--size", default="1400x860")
    args = ap.parse_args()

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_lggseg.layer_meta import PLUGIN

    work = Path(tempfile.mkdtemp(prefix="lggseg-screenshot-project-"))
    try:
        write_cohort(work / "synthetic-cohort")
        viewer = napari.Viewer(title="napari-lggseg annotation project", show=True)
        width, height = (int(v) for v in args.size.split("x"))
        viewer.window._qt_window.resize(width, height)
        app = QApplication.instance()
        _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Annotation project")
        widget.form.round_every.value = 0
        assert widget.create_project(work / "synthetic-cohort", work / "my-project")
        widget.next_case()
        spin(app, lambda: widget.idle and not widget.project.cases_to_repredict())
        layer = widget.mask_layer
        z = int(np.asarray(layer.data).sum(axis=(1, 2)).argmax())
        layer.brush_size = 8
        ys, xs = np.nonzero(np.asarray(layer.data)[z])
        layer.paint((z, int(ys.mean()), int(xs.max()) + 3), 1)  # a correction at the border
        widget.done()  # saved as done; the next case opens
        spin(app, lambda: widget.idle and widget.mask_layer is not None)
        widget.mark_slice()
        widget.next_uncertain_slice()
        spin(app)
        path = args.out / "screenshot_project.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.png")
        viewer.screenshot(path=str(tmp), canvas_only=False, flash=False)
        tmp.replace(path)
        print(f"wrote {path}")
        widget.close_project()
        viewer.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
