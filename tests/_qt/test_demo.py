"""The README's demo: the sample, both widgets docked with Segment tumour in front, a first run."""

from __future__ import annotations

from napari_lggseg.demo import make_demo_viewer
from napari_lggseg.synthetic import SYNTH_PATIENT_ID


def test_demo_docks_both_widgets_and_segments_the_sample(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    make_demo_viewer(viewer=viewer, segment=True)
    docks = {name.split(" (")[0]: dock for name, dock in viewer.window._dock_widgets.items()}
    assert {"Segment tumour", "Fine-tune"} <= set(docks)
    seg, ft = docks["Segment tumour"].widget(), docks["Fine-tune"].widget()
    # Segment tumour is the tab in front, where the run's progress shows
    qtbot.waitUntil(lambda: not seg.visibleRegion().isEmpty(), timeout=5000)
    assert ft.visibleRegion().isEmpty()
    qtbot.waitUntil(lambda: not seg.is_running, timeout=60000)
    pred = seg.result_layer(SYNTH_PATIENT_ID)
    assert pred is not None and (pred.data > 0).any(), seg.status.text()
    z = int(viewer.dims.current_step[0])
    assert 0 < z < pred.data.shape[0] - 1  # starts mid-volume
