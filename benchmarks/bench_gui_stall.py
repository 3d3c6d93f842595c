"""Longest stall of napari's Qt event loop while the widgets segment and fine-tune.

A 10 ms QTimer runs on the GUI thread for the whole measurement; each tick records the time since
the previous one. A gap much longer than 10 ms is a stall: the window does not repaint or react.
Target: the longest gap under 100 ms. Measured in a real, shown napari window with both widgets
docked, from pressing Run until the result is in the viewer (including adding the layer):

1. Segment tumour on a real patient (the first of ``--data``, default ../shared/lgg/kaggle_3m;
   the synthetic sample when the data are absent), ``--repeats`` times (the first run includes
   loading the model);
2. Fine-tune on three slices corrected through napari's edit API (``--epochs`` epochs).

Model: ``--model``, else the store's default; with an empty store, a tiny model is trained first
into a temporary store (as the tests do), which makes inference far lighter than a real model.

Run under a display (Xvfb is fine)::

    xvfb-run -a .venv/bin/python benchmarks/bench_gui_stall.py
    xvfb-run -a .venv/bin/python benchmarks/bench_gui_stall.py --model lgg-fast --repeats 3 --epochs 3

The README's widget screenshots come from the same run on the synthetic sample (no patient data
in the repository)::

    xvfb-run -a .venv/bin/python benchmarks/bench_gui_stall.py --sample --screenshots docs

The numbers depend on the load: note the load average printed, and that torch's worker threads
compete with the GUI thread for the same cores.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from napari_lggseg.layer_meta import PLUGIN, read_meta  # light: numpy only

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "lgg" / "kaggle_3m"

TICK_MS = 10


class GapMeter:
    """A 10 ms QTimer on the GUI thread; ``gaps`` are the seconds between consecutive ticks."""

    def __init__(self):
        from qtpy.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.gaps: list[float] = []
        self.ticks: list[float] = []  # every tick of every phase, for StallSampler
        self._last = None

    def _tick(self):
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append(now - self._last)
        self._last = now
        self.ticks.append(now)

    def start(self):
        # the first gap counts from now: work done synchronously right after start() is a stall too
        self.gaps, self._last = [], time.perf_counter()
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        return self.gaps


class StallSampler:
    """A watchdog thread that, while the GUI tick is more than ``after_ms`` late, samples the
    Python stacks of every busy thread every 20 ms: where a stall comes from. (A thread holding the
    GIL in C code delays the sample, but its frame still shows.)"""

    IDLE = ("threading.py", "queue.py", "selectors.py")

    def __init__(self, meter: GapMeter, after_ms: float = 50.0):
        import threading

        self.meter, self.after = meter, after_ms / 1000
        self.stalls: dict[float, list[str]] = {}  # tick time before the stall -> stack samples
        self.collections: list[
            tuple[float, float, int, str]
        ] = []  # start, seconds, generation, thread
        self._gc_start = 0.0
        gc.callbacks.append(self._on_gc)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        import sys
        import threading
        import traceback

        while not self._stop.wait(0.005):
            last = self.meter._last
            if last is None or time.perf_counter() - last < self.after:
                continue
            names = {t.ident: t.name for t in threading.enumerate()}
            stacks = []
            for ident, frame in sys._current_frames().items():
                if ident == threading.get_ident():
                    continue
                lines = traceback.format_stack(frame)
                if any(idle in lines[-1] for idle in self.IDLE):
                    continue
                stacks.append(f"--- {names.get(ident, ident)}\n" + "".join(lines[-8:]))
            self.stalls.setdefault(last, []).append("\n".join(stacks))
            self._stop.wait(0.02)

    def _on_gc(self, phase, info):
        import threading

        now = time.perf_counter()
        if phase == "start":
            self._gc_start = now
        elif now - self._gc_start > 0.02:
            self.collections.append(
                (
                    self._gc_start,
                    now - self._gc_start,
                    info["generation"],
                    threading.current_thread().name,
                )
            )

    def stop(self):
        self._stop.set()
        self._thread.join()
        gc.callbacks.remove(self._on_gc)

    def print(self, top: int = 3):
        """The samples of the ``top`` longest stalls."""
        gaps = {}
        for last in self.stalls:
            nxt = min((t for t in self.meter.ticks if t > last), default=None)
            gaps[last] = (nxt - last) if nxt else float("nan")
        for last in sorted(gaps, key=lambda k: -gaps[k])[:top]:
            print(
                f"===== stall of {gaps[last] * 1000:.0f} ms: {len(self.stalls[last])} sample(s)",
                flush=True,
            )
            for start, secs, gen, thread in self.collections:
                if last <= start <= last + gaps[last]:
                    print(
                        f"(garbage collection of generation {gen} in {thread}: {secs * 1000:.0f} ms)"
                    )
            for text in self.stalls[last][:3]:
                print(text, flush=True)


def run_until_done(widget, start, settle_ms: int = 200) -> float:
    """Start a widget's run with ``start()`` and spin the event loop until it has finished and its
    result has been placed; returns the seconds it took."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    t0 = time.perf_counter()
    if not start():
        raise RuntimeError(f"could not start: {widget.status.text()}")
    widget.runner.when_done(lambda: QTimer.singleShot(settle_ms, loop.quit))
    loop.exec()
    return time.perf_counter() - t0 - settle_ms / 1000


_modules_seen = set(sys.modules)


def report(name: str, seconds: float, gaps: list[float]) -> dict:
    global _modules_seen
    new = set(sys.modules) - _modules_seen
    _modules_seen |= new
    worst = max(gaps) * 1000 if gaps else float("nan")
    p99 = statistics.quantiles(gaps, n=100)[98] * 1000 if len(gaps) >= 100 else worst
    over = sum(g > 0.1 for g in gaps)
    verdict = "OK" if worst < 100 else "OVER TARGET"
    print(
        f"{name:<34} {seconds:7.1f} s  {len(gaps):6d} ticks  longest gap {worst:7.1f} ms  "
        f"p99 {p99:6.1f} ms  gaps >100 ms: {over}  [{verdict}]"
        + (
            f"  ({len(new)} modules imported"
            + (f": {', '.join(sorted(new))}" if len(new) <= 4 else "")
            + ")"
            if new
            else ""
        ),
        flush=True,
    )
    return {
        "phase": name,
        "seconds": seconds,
        "ticks": len(gaps),
        "longest_ms": worst,
        "p99_ms": p99,
    }


def ensure_model(name: str | None) -> str:
    from napari_lggseg import models

    if "LGGSEG_MODEL_DIR" not in os.environ:
        # models the benchmark fine-tunes go to a temporary store, not the user's
        store = tempfile.mkdtemp(prefix="lggseg-bench-store-")
        atexit.register(shutil.rmtree, store, ignore_errors=True)
        os.environ["LGGSEG_MODEL_DIR"] = store
    if name:
        return models.get_model(name).name
    if models.list_models():
        return models.default_model_name("cpu")
    # empty store: a tiny model, as the tests train it
    from napari_lggseg.finetune import model_card
    from napari_lggseg.preprocess import Recipe
    from napari_lggseg.synthetic import make_synthetic_patient
    from napari_lggseg.train_data import TrainVolume
    from napari_lggseg.training import TrainConfig, train
    from napari_lggseg.unet import UNet

    print("no model in the store: training a tiny one (width 8, 64 px) first…", flush=True)
    vols = [
        TrainVolume(f"SYNTH_{s}", *make_synthetic_patient(seed=s, n_slices=16, size=128))
        for s in range(1, 8)
    ]
    recipe = Recipe(size=64, context=0)
    cfg = TrainConfig(
        epochs=4,
        steps_per_epoch=30,
        batch_size=8,
        lr=3e-3,
        warmup_steps=10,
        device="cpu",
        substitute=0.0,
    )
    result = train(UNet(recipe.in_channels, 1, 8), recipe, vols[:6], vols[6:], cfg)
    info = models.save_model(
        result.state_dict,
        model_card(recipe, 8, result, cfg, parent=None, intended_use="benchmark only"),
        "bench-tiny",
    )
    return info.name


def correct(viewer, pred, mask) -> None:
    """Correct three slices as a person would, through napari's edit API (so its paint events fire
    and the slices count as reviewed): with ground truth open, the three slices where the
    prediction is most wrong get the truth; without, each loses a few pixels of its edge."""
    import numpy as np

    truth = next(
        (
            np.asarray(lyr.data) > 0
            for lyr in viewer.layers
            if (read_meta(lyr) or {}).get("role") == "ground truth"
        ),
        None,
    )
    if truth is not None and truth.shape == mask.shape:
        wrong = (truth != mask).sum(axis=(1, 2))
        for z in np.argsort(wrong)[::-1][:3]:
            for value in (0, 1):
                idx = np.nonzero((truth[z] == value) & (mask[z] != value))
                if idx[0].size:
                    pred.data_setitem((np.full(idx[0].size, z), *idx), value)
        return
    zs = np.flatnonzero(mask.any(axis=(1, 2)))[:3]
    pred.brush_size = 5
    for z in zs if len(zs) else [mask.shape[0] // 2]:
        ys, xs = (
            np.nonzero(mask[z]) if mask[z].any() else ([mask.shape[1] // 2], [mask.shape[2] // 2])
        )
        pred.paint((int(z), int(ys[0]), int(xs[0])), 0 if mask[z].any() else 1)


def shoot(viewer, path: Path) -> None:
    """The whole window, as the README shows it."""
    from qtpy.QtWidgets import QApplication

    for _ in range(30):
        QApplication.processEvents()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    viewer.screenshot(path=str(tmp), canvas_only=False, flash=False)
    tmp.replace(path)
    print(f"wrote {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="kaggle_3m root or a patient folder"
    )
    parser.add_argument(
        "--model", help="model to segment with and fine-tune from (default: the store's)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="segmentation runs (default 2)")
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs (default 2)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--stacks",
        action="store_true",
        help="print the Python stacks of all threads during the longest stalls",
    )
    parser.add_argument(
        "--sample", action="store_true", help="use the synthetic sample patient, not --data"
    )
    parser.add_argument(
        "--screenshots",
        type=Path,
        metavar="DIR",
        help="also save the window after segmenting and after fine-tuning as "
        "DIR/screenshot_segment.png and DIR/screenshot_finetune.png (the README's)",
    )
    args = parser.parse_args(argv)
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        print(
            "note: QT_QPA_PLATFORM=offscreen does not render like a real display; prefer xvfb-run",
            file=sys.stderr,
        )

    model = ensure_model(args.model)
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_lggseg import lgg_io

    viewer = napari.Viewer(title="napari-lggseg stall benchmark", show=True)
    viewer.window._qt_window.resize(1400, 900)
    source = "synthetic sample"
    data = args.data
    if data.is_dir() and lgg_io.is_patient_root(data):
        data = lgg_io.list_patients(data)[0]
    if not args.sample and data.is_dir() and lgg_io.is_patient_folder(data):
        viewer.open(str(data), plugin=PLUGIN)
        source = data.name
    else:
        viewer.open_sample(PLUGIN, "synthetic_patient")
    t0 = time.perf_counter()
    seg_dock, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment tumour")
    t1 = time.perf_counter()
    ft_dock, ft = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune", tabify=True)
    print(
        f"opening the widgets (imports torch and what runs need, on purpose): Segment tumour "
        f"{t1 - t0:.2f} s, Fine-tune {time.perf_counter() - t1:.2f} s",
        flush=True,
    )
    seg.select_model(model)
    if args.device in seg.form.device.choices:
        seg.form.device.value = args.device
    for _ in range(20):
        QApplication.processEvents()

    flair = next(lyr for lyr in viewer.layers if (read_meta(lyr) or {}).get("sequence") == "FLAIR")
    import torch

    print(
        f"patient: {source} {tuple(flair.data.shape)}; model: {model}; device: {args.device}; "
        f"torch threads: {torch.get_num_threads()}; cores: {os.cpu_count()}; "
        f"load average before: {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    meter = GapMeter()
    sampler = StallSampler(meter) if args.stacks else None
    results = []

    from qtpy.QtCore import QEventLoop, QTimer

    meter.start()  # idle baseline: the same window doing nothing but the timer, for 2 s
    loop = QEventLoop()
    QTimer.singleShot(2000, loop.quit)
    loop.exec()
    results.append(report("idle (baseline)", 2.0, meter.stop()))
    meter.start()  # napari's own cost: stepping through slices (repaints the canvas)
    t0 = time.perf_counter()
    for z in range(min(10, flair.data.shape[0])):
        QTimer.singleShot(100 * z, lambda z=z: viewer.dims.set_current_step(0, z))
    QTimer.singleShot(100 * 10 + 100, loop.quit)
    loop.exec()
    results.append(
        report("napari: step 10 slices (reference)", time.perf_counter() - t0, meter.stop())
    )

    seg_dock.raise_()  # the widget that works is the one on screen, progress bar and all
    for i in range(args.repeats):
        meter.start()
        secs = run_until_done(seg, seg.run)
        label = "segment" + (" (incl. model load)" if i == 0 else "")
        results.append(report(label, secs, meter.stop()))

    # napari's own cost of what a run ends with: adding a Labels layer of the patient's shape
    meter.start()
    t0 = time.perf_counter()
    ref = viewer.add_labels(np.zeros(flair.data.shape, np.uint8), name="reference labels")
    QTimer.singleShot(200, loop.quit)
    loop.exec()
    results.append(
        report(
            "napari: add a Labels layer (reference)", time.perf_counter() - t0 - 0.2, meter.stop()
        )
    )
    viewer.layers.remove(ref)

    pred = seg.result_layer()
    mask = np.asarray(pred.data) > 0
    if args.screenshots:
        viewer.dims.set_current_step(0, int(mask.sum(axis=(1, 2)).argmax()))
        viewer.layers.selection.active = pred
        shoot(viewer, args.screenshots / "screenshot_segment.png")
    correct(viewer, pred, mask)
    ft_dock.raise_()
    for _ in range(20):
        QApplication.processEvents()
    ft.set_budget(args.epochs, "epochs")
    ft.form.model_name.value = f"{model}-bench"
    meter.start()
    secs = run_until_done(ft, ft.run)
    results.append(report(f"fine-tune ({args.epochs} epochs)", secs, meter.stop()))
    print(f"fine-tune: {ft.status.text()}")
    if args.screenshots:
        shoot(viewer, args.screenshots / "screenshot_finetune.png")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if sampler is not None:
        sampler.stop()
        sampler.print()
    if ft.new_model:
        from napari_lggseg.models import delete_model

        delete_model(ft.new_model)  # leave the store as it was
    viewer.close()
    worst = max(r["longest_ms"] for r in results[1:])
    return 0 if worst < 100 else 1


if __name__ == "__main__":
    raise SystemExit(main())
