"""``python -m napari_lggseg.demo [PATH]``: napari with an LGG patient (the synthetic sample
unless PATH is given), the Segment and Fine-tune widgets docked, and a first segmentation with
the default model running (``--no-segment`` to skip it)."""

from __future__ import annotations

import argparse

from .layer_meta import PLUGIN


def make_demo_viewer(
    path: str | None = None, show: bool = True, segment: bool = False, viewer=None
):
    """A viewer (a new one unless ``viewer`` is given) with the sample (or ``path``, read by this
    plugin) and both widgets docked, Segment tumour in front; with ``segment``, Segment tumour
    starts a run (in its worker thread) with the default model."""
    import napari
    from qtpy.QtCore import QTimer

    if viewer is None:
        viewer = napari.Viewer(title="napari-lggseg demo", show=show)
    if path:
        viewer.open(path, plugin=PLUGIN)
    else:
        viewer.open_sample(PLUGIN, "synthetic_patient")
    seg_dock, seg_widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment tumour")
    viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune", tabify=True)
    # tabifying puts Fine-tune in front; raising takes effect only once Qt has laid the tabs out
    QTimer.singleShot(0, seg_dock.raise_)
    # start in the middle of the volume, where the tumour usually is
    viewer.dims.set_point(0, (viewer.dims.range[0].start + viewer.dims.range[0].stop) / 2)
    if segment and seg_widget.model_name:
        seg_widget.run()
    return viewer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m napari_lggseg.demo", description=__doc__)
    parser.add_argument(
        "path", nargs="?", help="patient folder, slice, corrections folder or kaggle_3m root"
    )
    parser.add_argument("--no-segment", action="store_true", help="do not segment on start")
    args = parser.parse_args(argv)
    import napari

    make_demo_viewer(args.path, segment=not args.no_segment)
    napari.run()


if __name__ == "__main__":
    main()
