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


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    ids = args.patients or json.loads((REPO / "training" / "splits.json").read_text())[args.split]
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
