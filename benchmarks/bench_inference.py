"""End-to-end seconds per volume: our engine against a plain fp32 loop over the reference network.

Each volume is read from its folder (lgg_io.read_patient), segmented, and its mask written as a
corrections folder in a temporary directory, as ``lggseg segment`` does. Two engines run in the
same invocation, each in a fresh subprocess (so each one's peak RSS is its own):

* ``ours``      -- inference.Segmenter with ``--model`` (default: the shipped default model; without
                   one, a freshly initialised UNet(5, 1, 16) with Recipe(): timing does not depend
                   on the weights), crop-zscore preprocessing, channels_last, bf16 only where native.
* ``reference`` -- Buda et al.'s setting: UNet(3, 1, 32) at 256x256, the reference preprocessing
                   (skimage), every slice in one batch, plain fp32 eager, no channels_last, no
                   autocast; threshold 0.5 and the largest component.

Patients: ``--patients N`` real patients with 30-36 slices from ``--data`` (default
``../shared/lgg/kaggle_3m``), spread over institutions. Before timing, each engine runs once on a
few slices (warm-up). Run on an idle machine::

    .venv/bin/python benchmarks/bench_inference.py                      # 5 patients, ~2-3 min on 2 cores
    .venv/bin/python benchmarks/bench_inference.py --patients 1         # smoke test
    .venv/bin/python benchmarks/bench_inference.py --model lgg-fast --json bench.json
    # two models side by side, alternating, in one run:
    .venv/bin/python benchmarks/bench_inference.py \
        --engines ours:lgg-fast,ours:lgg-multisite,ours:lgg-fast,ours:lgg-multisite
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "lgg" / "kaggle_3m"


def pick_patients(root: Path, n: int, lo: int = 30, hi: int = 36) -> list[Path]:
    """``n`` patients with ``lo..hi`` slices, taken round-robin over institutions (by name)."""
    from napari_lggseg import lgg_io

    by_inst: dict[str, list[Path]] = {}
    for folder in lgg_io.list_patients(root):
        slices = len(lgg_io.find_patient(folder).image_files)
        if lo <= slices <= hi:
            by_inst.setdefault(lgg_io.institution_of(folder.name), []).append(folder)
    out: list[Path] = []
    queues = [list(v) for _, v in sorted(by_inst.items())]
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    if not out:
        raise SystemExit(f"no patients with {lo}-{hi} slices in {root}")
    return out


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20  # macOS reports bytes


# --------------------------------------------------------------------------- the engines (in a worker)


def _ours(model_name: str | None, device: str):
    """(segment(image) -> mask, description)."""
    from napari_lggseg import models
    from napari_lggseg.inference import Segmenter
    from napari_lggseg.preprocess import Recipe
    from napari_lggseg.unet import UNet

    name = model_name
    if name is None:
        try:
            name = models.default_model_name("cpu" if device == "cpu" else device)
        except models.ModelError:
            name = None
    if name is not None:
        seg = Segmenter.from_store(name, device=device, fallback=False)
        label = name
    else:
        recipe = Recipe()
        seg = Segmenter(
            UNet(recipe.in_channels, 1, 16), recipe, device, name="untrained", fallback=False
        )
        label = "untrained UNet(5,1,16)"
    post = seg.default_postprocess  # the card's method (from_store), else the package default
    r = seg.recipe
    desc = (
        f"{label}: {r.name} {r.size}px, {r.in_channels} channels, width {seg.model.width}, "
        f"batch {seg.batch_size}, post-processing {post}"
    )

    def run(image):
        return seg.segment(image, 0.5, post).mask

    return run, desc, seg.device


def _reference(device: str):
    import numpy as np
    import torch

    from napari_lggseg import metrics
    from napari_lggseg.devices import resolve_device
    from napari_lggseg.preprocess import REFERENCE, prepare, restore
    from napari_lggseg.unet import UNet

    dev = resolve_device(device)
    net = UNet(3, 1, 32).eval().to(dev)

    def run(image):
        x, geom = prepare(image, REFERENCE)
        with torch.no_grad():
            prob = torch.sigmoid(net(torch.from_numpy(x).to(dev)))[:, 0].cpu().numpy()
        prob = restore(prob, geom)
        return metrics.postprocess((prob >= 0.5).astype(np.uint8), "largest")

    return (
        run,
        "UNet(3,1,32), reference preprocessing 256px, all slices in one batch, fp32 eager",
        dev,
    )


def worker(engine: str, patients: list[str], model: str | None, device: str, threads: int) -> dict:
    import numpy as np
    import torch

    from napari_lggseg import lgg_io

    torch.set_num_threads(threads)
    if engine.startswith("ours:"):  # ours:MODEL, to time two models side by side in one run
        engine, model = "ours", engine.split(":", 1)[1]
    run, desc, dev = _ours(model, device) if engine == "ours" else _reference(device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    warm = lgg_io.read_patient(patients[0]).image
    run(warm[len(warm) // 2 - 2 : len(warm) // 2 + 2])  # kernels chosen, memory pools filled
    sync()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lggseg-bench-") as tmp:
        for folder in map(Path, patients):
            t0 = time.perf_counter()
            patient = lgg_io.read_patient(folder, masks=False)
            t1 = time.perf_counter()
            mask = run(patient.image)
            sync()
            t2 = time.perf_counter()
            lgg_io.write_corrections(
                Path(tmp) / f"{engine}-{patient.patient_id}",
                mask,
                patient.patient_id,
                folder,
                model=engine,
            )
            t3 = time.perf_counter()
            rows.append(
                {
                    "patient": patient.patient_id,
                    "slices": int(patient.image.shape[0]),
                    "read_s": t1 - t0,
                    "segment_s": t2 - t1,
                    "write_s": t3 - t2,
                    "total_s": t3 - t0,
                    "tumour_voxels": int(np.count_nonzero(mask)),
                }
            )
    return {
        "engine": engine,
        "description": desc,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "rows": rows,
        "peak_rss_mb": peak_rss_mb(),
    }


# --------------------------------------------------------------------------- driver


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument(
        "--patients", type=int, default=5, help="how many 30-36-slice patients (default 5)"
    )
    ap.add_argument(
        "--model", default=None, help="our model (default: the shipped default, else untrained)"
    )
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or mps")
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="torch threads (default: all CPUs)"
    )
    ap.add_argument("--engines", default="ours,reference")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--patient-list", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(
            json.dumps(
                worker(
                    args.worker,
                    json.loads(args.patient_list),
                    args.model,
                    args.device,
                    args.threads,
                )
            )
        )
        return 0

    import torch

    from napari_lggseg.devices import cpu_has_native_bf16, cpu_model

    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: no such folder (give --data KAGGLE_ROOT)")
    patients = pick_patients(args.data, args.patients)
    print(
        f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); torch {torch.__version__}, "
        f"{args.threads} threads; native bf16: {'yes' if cpu_has_native_bf16() else 'no (fast path stays fp32)'}"
        f"; device {args.device}"
    )
    print(f"patients: {', '.join(p.name for p in patients)}\n")

    results = []
    for engine in args.engines.split(","):
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            engine,
            "--device",
            args.device,
            "--threads",
            str(args.threads),
            "--patient-list",
            json.dumps([str(p) for p in patients]),
        ]
        if args.model:
            cmd += ["--model", args.model]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(f"the {engine} engine failed (exit code {proc.returncode})")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["wall_s"] = time.perf_counter() - t0
        repeat = sum(r["name"].split("#")[0] == engine for r in results)
        res["name"] = engine if not repeat else f"{engine}#{repeat + 1}"
        results.append(res)
        print(f"{res['name']}: {res['description']} ({res['device']}, {res['threads']} threads)")

    print()
    w = max(14, *(len(r["name"]) + 4 for r in results))
    header = f"{'patient':<24}{'slices':>7}" + "".join(f"{r['name'] + ' s':>{w}}" for r in results)
    print(header)
    for i in range(len(patients)):
        row = results[0]["rows"][i]
        print(
            f"{row['patient']:<24}{row['slices']:>7}"
            + "".join(f"{r['rows'][i]['total_s']:>{w}.2f}" for r in results)
        )
    print()
    summary = {}
    print(
        f"{'engine':<22}{'mean s/vol':>12}{'median':>9}{'ms/slice':>10}{'read':>7}{'segment':>9}{'write':>7}"
        f"{'peak RSS MB':>13}"
    )
    for r in results:
        tot = [x["total_s"] for x in r["rows"]]
        slices = sum(x["slices"] for x in r["rows"])
        s = {
            "mean_s": statistics.fmean(tot),
            "median_s": statistics.median(tot),
            "ms_per_slice": 1000 * sum(tot) / slices,
            **{
                k: statistics.fmean(x[f"{k}_s"] for x in r["rows"])
                for k in ("read", "segment", "write")
            },
            "peak_rss_mb": r["peak_rss_mb"],
        }
        summary[r["name"]] = s
        print(
            f"{r['name']:<22}{s['mean_s']:>12.2f}{s['median_s']:>9.2f}{s['ms_per_slice']:>10.1f}"
            f"{s['read']:>7.2f}{s['segment']:>9.2f}{s['write']:>7.2f}{s['peak_rss_mb']:>13.0f}"
        )
    pooled = {}  # ours:MODEL engines, repeats pooled: mean seconds per volume
    for r in results:
        if r["name"].startswith("ours:"):
            pooled.setdefault(r["name"].split("#")[0], []).extend(x["total_s"] for x in r["rows"])
    if len(pooled) == 2:
        (a, ta), (b, tb) = pooled.items()
        ratio = statistics.fmean(tb) / statistics.fmean(ta)
        print(f"\n{b} / {a}: {ratio:.2f} (mean seconds per volume, repeats pooled)")
        summary["ratio_second_over_first"] = ratio
    if "ours" in summary and "reference" in summary:
        ratio = summary["reference"]["mean_s"] / summary["ours"]["mean_s"]
        print(f"\nreference / ours: {ratio:.1f}x (mean seconds per volume, end to end)")
        summary["ratio_reference_over_ours"] = ratio
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cpu": cpu_model(),
                    "cpus": os.cpu_count(),
                    "torch": torch.__version__,
                    "threads": args.threads,
                    "native_bf16": cpu_has_native_bf16(),
                    "device": args.device,
                    "patients": [p.name for p in patients],
                    "summary": summary,
                    "engines": results,
                },
                indent=2,
            )
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
