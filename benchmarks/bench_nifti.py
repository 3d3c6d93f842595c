"""End to end seconds per NIfTI case (read, segment, write) and peak memory, in one process.

What the issue measures: a 240 x 240 x 155 case (BraTS size: FLAIR, T1, T1ce, T2 + label,
.nii.gz), the wall time of one process over 6 cases divided by 6, process start included, and
its peak resident memory; target <= 5 s per case and <= 1.5 GB on 2 slow (AVX2-only) cores.

The worker runs, per case, exactly what ``lggseg segment`` runs for a NIfTI case:
:func:`cases.read_case` -> :func:`geometry.segment_case` -> :func:`scan_masks.save_mask`
(a fresh output folder per case). ``--cli`` times the ``lggseg segment CASES... --out OUT``
command itself instead, once it accepts NIfTI cases.

Cases: ``--cases DIR`` (a case folder or a folder of them; cycled to ``--n`` runs), else ``--n``
synthetic BraTS-sized cases written by this script into a temporary folder (a phantom head with a
lesion; timing does not depend on the anatomy)::

    .venv/bin/python benchmarks/bench_nifti.py                                  # 6 synthetic cases
    .venv/bin/python benchmarks/bench_nifti.py --cases ../shared/external/brats18
    .venv/bin/python benchmarks/bench_nifti.py --slice-spacing none             # every 1 mm slice
    .venv/bin/python benchmarks/bench_nifti.py --cli --cases ../shared/external/brats18
    .venv/bin/python benchmarks/bench_nifti.py --compare-spacing none,2,3,4,5,6 \
        --cases ../shared/external/brats18                 # Dice per through-plane spacing

``--compare-spacing`` is the measurement behind ``geometry.DEFAULT_SLICE_SPACING``: per case
and spacing, the Dice against the case's label file and the seconds segment_case took.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPE = (240, 240, 155)  # BraTS: i (R->L), j (A->P), k (I->S), 1 mm


def write_synthetic_cases(root: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` BraTS-2018-style case folders of SHAPE (int16 .nii.gz, LPS affine as BraTS)."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(seed)
    affine = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    i, j, k = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    head = ((i - 120) / 70) ** 2 + ((j - 120) / 90) ** 2 + ((k - 70) / 65) ** 2 <= 1
    out = []
    for c in range(n):
        ci, cj, ck = rng.integers(80, 160), rng.integers(80, 160), rng.integers(50, 100)
        lesion = head & (
            ((i - ci) ** 2 + (j - cj) ** 2 + (k - ck) ** 2) <= rng.integers(10, 25) ** 2
        )
        folder = root / f"SYNTH_{c + 1:03d}"
        folder.mkdir(parents=True)
        for seq, (tissue, tumour) in {
            "flair": (300, 700),
            "t1": (400, 250),
            "t1ce": (500, 900),
            "t2": (350, 800),
        }.items():
            vol = np.where(head, tissue, 0) + np.where(lesion, tumour - tissue, 0)
            vol = (vol + head * rng.normal(0, 20, SHAPE)).astype(np.int16)
            nib.save(nib.Nifti1Image(vol, affine), folder / f"{folder.name}_{seq}.nii.gz")
        nib.save(
            nib.Nifti1Image(lesion.astype(np.uint8) * 2, affine),
            folder / f"{folder.name}_seg.nii.gz",
        )
        out.append(folder)
    return out


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def worker(cases: list[str], out: str, model: str | None, threads: int, spacing) -> dict:
    """In a fresh process: import, load the model, then read, segment and write every case."""
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    from napari_lggseg import geometry, metrics, scan_masks
    from napari_lggseg.cases import read_case
    from napari_lggseg.inference import Segmenter

    segmenter = Segmenter.from_store(model, device="cpu")
    t_ready = time.perf_counter()
    rows = []
    for n, path in enumerate(cases):
        t0, c0 = time.perf_counter(), time.process_time()
        case = read_case(path)
        t1 = time.perf_counter()
        seg = geometry.segment_case(segmenter, case, slice_spacing=spacing)
        t2 = time.perf_counter()
        scan_masks.save_mask(case, seg.mask, Path(out) / f"{n:02d}_{case.case_id}", model=seg.model)
        t3 = time.perf_counter()
        dice = None if case.label is None else round(metrics.dice(seg.mask, case.label), 3)
        rows.append(
            {
                "case": case.case_id,
                "read_s": t1 - t0,
                "segment_s": t2 - t1,
                "write_s": t3 - t2,
                "cpu_s": time.process_time() - c0,
                "dice": dice,
            }
        )
    return {
        "import_and_model_s": t_ready - t_start,
        "cases": rows,
        "model": segmenter.name,
        "peak_rss_mb": peak_rss_mb(),
        "threads": torch.get_num_threads(),
    }


def compare_spacing(cases: list[Path], spacings: list, model: str | None, threads: int) -> None:
    """Dice and segment seconds per case for each through-plane spacing."""
    import torch

    torch.set_num_threads(threads)
    from napari_lggseg import geometry, metrics
    from napari_lggseg.cases import read_case
    from napari_lggseg.inference import Segmenter

    segmenter = Segmenter.from_store(model, device="cpu")
    means = {str(sp): [] for sp in spacings}
    for path in cases:
        case = read_case(path)
        if case.label is None:
            continue
        for sp in spacings:
            t0 = time.perf_counter()
            seg = geometry.segment_case(segmenter, case, slice_spacing=sp)
            dice = metrics.dice(seg.mask, case.label)
            means[str(sp)].append(dice)
            print(
                f"{case.case_id:<24} spacing {sp!s:>5}: Dice {dice:.3f}  "
                f"{time.perf_counter() - t0:.2f} s",
                flush=True,
            )
    print("mean Dice: " + ", ".join(f"{k} {sum(v) / len(v):.3f}" for k, v in means.items() if v))


def _spacing(text: str):
    return None if text.lower() == "none" else ("auto" if text == "auto" else float(text))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=Path, help="a case folder or a folder of them")
    ap.add_argument("--n", type=int, default=6, help="cases per process (cycled)")
    ap.add_argument("--model", default=None, help="model name (default: the shipped default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slice-spacing", default="auto", help="mm, 'auto' or 'none'")
    ap.add_argument("--cli", action="store_true", help="time `lggseg segment` instead")
    ap.add_argument("--compare-spacing", help="comma-separated spacings: Dice of each")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        job = json.loads(args._worker)
        print(json.dumps(worker(**job)))
        return 0
    if args.compare_spacing:
        from napari_lggseg.cases import find_cases

        spacings = [_spacing(t) for t in args.compare_spacing.split(",")]
        compare_spacing(find_cases(args.cases), spacings, args.model, args.threads)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-nifti-") as tmp:
        tmp = Path(tmp)
        if args.cases:
            from napari_lggseg.cases import find_cases

            found = find_cases(args.cases)
            if not found:
                raise SystemExit(f"{args.cases}: no NIfTI cases")
        else:
            print(f"writing {args.n} synthetic {'x'.join(map(str, SHAPE))} cases ...", flush=True)
            found = write_synthetic_cases(tmp / "cases", args.n)
        cases = [str(found[i % len(found)]) for i in range(args.n)]
        out = tmp / "out"
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        t0 = time.perf_counter()
        if args.cli:
            cmd = [
                str(Path(sys.executable).parent / "lggseg"),
                "segment",
                *cases,
                "--out",
                str(out),
            ]
            if args.model:
                cmd += ["--model", args.model]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            report = {"cli": cmd[1:2], "returncode": proc.returncode, "stderr": proc.stderr[-2000:]}
        else:
            job = {
                "cases": cases,
                "out": str(out),
                "model": args.model,
                "threads": args.threads,
                "spacing": _spacing(args.slice_spacing),
            }
            proc = subprocess.run(
                [sys.executable, __file__, "--_worker", json.dumps(job)],
                capture_output=True,
                text=True,
                env=env,
            )
            if proc.returncode:
                raise SystemExit(proc.stderr)
            report = json.loads(proc.stdout.strip().splitlines()[-1])
        wall = time.perf_counter() - t0
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_rss = child.ru_maxrss / 1024
    report.update(
        wall_s=wall,
        per_case_s=wall / args.n,
        cpu_s=child.ru_utime + child.ru_stime,  # all threads; load-independent, unlike wall
        n=args.n,
        peak_rss_mb_child=child_rss,
        load_average=os.getloadavg(),
        cpu=_cpu_name(),
        slice_spacing=args.slice_spacing,
        source=str(args.cases) if args.cases else "synthetic",
    )
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report.get("returncode", 0) == 0 else 1


def _cpu_name() -> str:
    try:
        from napari_lggseg.devices import cpu_model

        return cpu_model()
    except Exception:  # the helper's name may change; the figure does not depend on it
        return ""


def _print(r: dict) -> None:
    print(f"{r['n']} cases from {r['source']}, slice spacing {r['slice_spacing']}, {r['cpu']}")
    for row in r.get("cases", []):
        print(
            f"  {row['case']:<24} read {row['read_s']:.2f} s  segment {row['segment_s']:.2f} s  "
            f"write {row['write_s']:.2f} s  (CPU {row['cpu_s']:.2f} s)  Dice {row['dice']}"
        )
    if "import_and_model_s" in r:
        print(f"  process start, imports and model: {r['import_and_model_s']:.2f} s")
    print(
        f"wall {r['wall_s']:.1f} s for {r['n']} cases incl. process start = "
        f"{r['per_case_s']:.2f} s per case; CPU time {r['cpu_s'] / r['n']:.2f} s per case (all "
        f"threads, start included); peak memory {r['peak_rss_mb_child']:.0f} MB; "
        f"load average {r['load_average'][0]:.1f} (shared machine: other jobs count)"
    )
    if r.get("returncode"):
        print(f"lggseg failed ({r['returncode']}): {r['stderr']}")


if __name__ == "__main__":
    sys.exit(main())
