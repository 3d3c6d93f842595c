"""Click correction with simulated clicks: Dice after 0/1/3/5/10 clicks, NoC@85/90, ms per click.

The standard protocol (``napari_lggseg.click_sim``): each next click goes to the voxel farthest
from the boundary of the largest 3-D connected error region, positive in a missed region and
negative in a false one. Every model starts from the same first mask (the automatic model's, the
``first_step`` of its card), on the test split of training/splits.json unless ``--patients``
names others. ``--baseline`` adds the automatic model with zero click weights (what the clicks
give without training) side by side. Wall ms per click depend on what else runs; the CPU time
per click (all threads, ``time.process_time``) is given beside them. After the last click every click is undone and the mask
must equal the first mask exactly. Not a test: figures for the README, with this command::

    python benchmarks/bench_clicks.py --data ../shared/lgg/kaggle_3m --clicks 10 --baseline

``--viewer`` measures the viewer's path instead: each patient opened in a real napari viewer with
the Click correction dock, the same simulated clicks made on its clicks layer, and per click the
worker's ms and the total from the point's arrival to the mask merged on screen (queue, worker,
merge), median and p95. It needs a display (``xvfb-run -a`` on a server)::

    xvfb-run -a python benchmarks/bench_clicks.py --viewer --patients TCGA_CS_4942_19970222 --clicks 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_lggseg.click_sim import clicks_to_reach, next_click
from napari_lggseg.interactive import ClickIgnored, ClickModel, ClickSession
from napari_lggseg.lgg_io import read_patient
from napari_lggseg.metrics import dice

REPO = Path(__file__).resolve().parents[1]
REPORTED = (0, 1, 3, 5, 10)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "lgg" / "kaggle_3m")
    ap.add_argument("--patients", nargs="*", help="patient ids (default: the test split)")
    ap.add_argument("--split", default="test", choices=("test", "validation", "train"))
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--model", default=None, help="interactive model (default: the shipped one)")
    ap.add_argument("--baseline", action="store_true", help="also the zero-click-weights model")
    ap.add_argument("--baseline-only", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, help="write per-patient results here")
    ap.add_argument("--viewer", action="store_true", help="the viewer's path: dock, worker, merge")
    return ap.parse_args(argv)


def run_patient(session: ClickSession, image, truth, first, n_clicks: int) -> dict:
    """Dice after each click, ms per click, and whether undoing them all gives ``first`` back."""
    mask = session.start(image, mask=first)
    dices, ms, cpu_ms, note = [dice(mask, truth)], [], [], ""
    for _ in range(n_clicks):
        found = next_click(mask, truth)
        if found is None:
            break
        (z, y, x), positive = found
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            mask = session.add_click(z, y, x, positive)
        except ClickIgnored as exc:
            note = str(exc)
            break
        ms.append(1000 * (time.perf_counter() - t0))
        cpu_ms.append(1000 * (time.process_time() - c0))
        dices.append(dice(mask, truth))
    dices += [dices[-1]] * (n_clicks + 1 - len(dices))  # stopped early: the Dice stays
    for _ in session.clicks:
        mask = session.undo()
    return {
        "dice": dices,
        "ms": ms,
        "cpu_ms": cpu_ms,
        "undo_exact": bool(np.array_equal(mask, first)),
        "note": note,
    }


def summarise(name: str, results: dict, n_clicks: int) -> dict:
    dices = np.array([r["dice"] for r in results.values()])
    ms = np.concatenate([r["ms"] for r in results.values()] or [[]])
    cpu = np.concatenate([r["cpu_ms"] for r in results.values()] or [[]])
    return {
        "model": name,
        "patients": len(results),
        "dice": {k: float(dices[:, k].mean()) for k in REPORTED if k <= n_clicks},
        "noc85": float(np.mean([clicks_to_reach(list(d), 0.85) for d in dices])),
        "noc90": float(np.mean([clicks_to_reach(list(d), 0.90) for d in dices])),
        "ms_median": float(np.median(ms)) if ms.size else float("nan"),
        "ms_p95": float(np.percentile(ms, 95)) if ms.size else float("nan"),
        "cpu_ms_median": float(np.median(cpu)) if cpu.size else float("nan"),
        "undo_exact": all(r["undo_exact"] for r in results.values()),
    }


def line(s: dict) -> str:
    d = "  ".join(f"Dice@{k} {v:.3f}" for k, v in s["dice"].items())
    return (
        f"{s['model']}: {s['patients']} patients  {d}  NoC@85 {s['noc85']:.2f}  "
        f"NoC@90 {s['noc90']:.2f}  ms/click median {s['ms_median']:.0f} p95 {s['ms_p95']:.0f} "
        f"(CPU {s['cpu_ms_median']:.0f} ms, all threads)  "
        f"undo exact {'yes' if s['undo_exact'] else 'NO'}"
    )


def viewer_patient(viewer, widget, folder: Path, truth, first, n_clicks: int) -> dict:
    """One patient through the dock: open it, its first mask as the prediction layer, the
    protocol's clicks on its clicks layer; Dice after each and the dock's timings."""
    from qtpy.QtWidgets import QApplication

    from napari_lggseg.layer_meta import PLUGIN, Role, derive_meta, layer_kwargs, read_meta

    app = QApplication.instance()

    def spin(until) -> None:
        t0 = time.perf_counter()
        while not until():
            app.processEvents()
            time.sleep(0.001)
            if time.perf_counter() - t0 > 120:
                raise TimeoutError(widget.status.text())

    viewer.layers.clear()
    viewer.open(folder, plugin=PLUGIN)
    flair = next(lyr for lyr in viewer.layers if (read_meta(lyr) or {}).get("sequence") == "FLAIR")
    meta = derive_meta(read_meta(flair), Role.PREDICTION, model="first step", reviewed_slices=[])
    name = f"{meta['patient_id']} prediction"
    labels = viewer.add_labels(
        first.astype(np.uint8), **layer_kwargs(name, meta), scale=flair.scale
    )
    widget.form.mask.value = labels
    ctrl = widget.start()
    spin(lambda: not widget.is_busy and "Ready" in widget.status.text())
    mask, dices = first, [dice(first, truth)]
    for k in range(n_clicks):
        found = next_click(mask, truth)
        if found is None:
            break
        (z, y, x), positive = found
        ctrl.add_click(z, y, x, positive)
        spin(lambda: not widget.is_busy and all(c.state == "applied" for c in ctrl.entries))
        if len(ctrl.timings) <= k:  # ignored (outside the head): the protocol stops here
            break
        mask = np.asarray(labels.data) > 0
        dices.append(dice(mask, truth))
    dices += [dices[-1]] * (n_clicks + 1 - len(dices))
    return {"dice": dices, "timings": list(ctrl.timings)}


def main_viewer(args, ids) -> None:
    import napari

    from napari_lggseg.layer_meta import PLUGIN

    viewer = napari.Viewer(show=False)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Click correction")
    if args.model:
        widget.form.model.value = args.model
    first_step = ClickSession(widget.form.model.value, device=args.device)
    worker_ms, total_ms, merge_ms, cpu_ms, dices = [], [], [], [], []
    for pid in ids:
        patient = read_patient(args.data / pid)
        truth = patient.mask > 0
        first = first_step.start(patient.image)
        r = viewer_patient(viewer, widget, args.data / pid, truth, first, args.clicks)
        worker_ms += [t["worker_ms"] for t in r["timings"]]
        total_ms += [t["total_ms"] for t in r["timings"]]
        merge_ms += [t["merge_ms"] for t in r["timings"]]
        cpu_ms += [t["cpu_ms"] for t in r["timings"]]
        dices.append(r["dice"])
        print(f"{pid} viewer: Dice {' '.join(f'{d:.3f}' for d in r['dice'])}  ms total "
              f"{np.median([t['total_ms'] for t in r['timings']]):.0f}", flush=True)  # fmt: skip
    d = np.array(dices)
    dice_text = "  ".join(f"Dice@{k} {d[:, k].mean():.3f}" for k in REPORTED if k <= args.clicks)
    print(
        f"summary: viewer path, {len(ids)} patients, {len(total_ms)} clicks  {dice_text}  "
        f"ms/click (point to mask on screen) median {np.median(total_ms):.0f} p95 "
        f"{np.percentile(total_ms, 95):.0f}; worker median {np.median(worker_ms):.0f} p95 "
        f"{np.percentile(worker_ms, 95):.0f}; merge (GUI thread) median {np.median(merge_ms):.1f}; CPU (all threads) "
        f"median {np.median(cpu_ms):.0f}"
    )
    viewer.close()


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    ids = args.patients or json.loads((REPO / "training" / "splits.json").read_text())[args.split]
    if args.viewer:
        return main_viewer(args, ids)
    click_models = [] if args.baseline_only else [ClickModel.from_store(args.model)]
    if args.baseline or args.baseline_only:
        first = click_models[0].first_step if click_models else None
        click_models.append(ClickModel.from_automatic(first))
    sessions = [ClickSession(cm, device=args.device) for cm in click_models]
    results = {cm.name: {} for cm in click_models}
    for pid in ids:
        patient = read_patient(args.data / pid)
        truth = patient.mask > 0
        first = sessions[0].start(patient.image)  # the automatic first step, shared by all
        for cm, session in zip(click_models, sessions):
            r = run_patient(session, patient.image, truth, first, args.clicks)
            results[cm.name][pid] = r
            print(
                f"{pid} {cm.name}: Dice {' '.join(f'{d:.3f}' for d in r['dice'])}  "
                f"ms {np.median(r['ms']) if r['ms'] else float('nan'):.0f} {r['note']}",
                flush=True,
            )
    summaries = [summarise(name, res, args.clicks) for name, res in results.items()]
    if args.json:
        args.json.write_text(json.dumps({"summaries": summaries, "results": results}, indent=1))
    for s in summaries:
        print(line(s))
    print("summary: " + " | ".join(line(s) for s in summaries))


if __name__ == "__main__":
    main()
