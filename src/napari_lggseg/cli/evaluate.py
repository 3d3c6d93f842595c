"""``lggseg evaluate``: per-volume Dice against the expert masks, with our protocol."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from ._common import (
    CLIError,
    ProgressBar,
    add_engine_options,
    card_postprocess,
    patient_folders,
    patient_ids,
    print_table,
    segmenter,
    select,
    write_csv,
)

PROTOCOL_NOTE = (
    "protocol: per-volume Dice, threshold 0.5, every original slice at its original resolution. "
    "Buda et al.'s reference code scores cropped, resized volumes without their first and last "
    "slice, so its numbers are not directly comparable."
)
CSV_COLUMNS = (
    "patient",
    "slices",
    "true_voxels",
    "predicted_voxels",
    "dice",
    "missing_sequences",
    "seconds",
    "model",
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="per-volume Dice against expert masks",
        description="Per-volume Dice with our protocol (threshold 0.5, every original slice "
        "at original resolution). " + PROTOCOL_NOTE.split(". ", 1)[1],
    )
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="DIR",
        help="kaggle_3m-style root or patient folders",
    )
    p.add_argument(
        "--patients",
        nargs="+",
        metavar="ID",
        help="patient ids, a JSON file with a list, or FILE.json:KEY (e.g. training/splits.json:test)",
    )
    p.add_argument("--csv", metavar="FILE", help="also write the per-patient table here")
    add_engine_options(p, "default: the model card's method, else min-size")
    p.set_defaults(run=run)


def _score(seg, post, folders) -> tuple[list[dict], list[str]]:
    """Dice rows of the patients with masks, and the ids of those without."""
    from .. import lgg_io, metrics

    rows, skipped = [], []
    for k, folder in enumerate(folders, 1):
        patient = lgg_io.read_patient(folder)
        if patient.mask is None:
            skipped.append(patient.patient_id)
            continue
        bar = ProgressBar(f"[{k}/{len(folders)}] {patient.patient_id}")
        try:
            result = seg.segment(patient.image, 0.5, post, progress=bar.update)
        finally:
            bar.close()
        rows.append(
            {
                "patient": patient.patient_id,
                "slices": patient.image.shape[0],
                "true_voxels": int(patient.mask.sum()),
                "predicted_voxels": int(result.mask.sum()),
                "dice": metrics.dice(result.mask, patient.mask),
                "missing_sequences": result.sequences_note,
                "seconds": round(result.seconds, 2),
            }
        )
    return rows, skipped


def _print_summary(rows: list[dict], skipped: list[str], model: str) -> None:
    print_table(
        [
            [
                r["patient"],
                r["slices"],
                r["true_voxels"],
                r["predicted_voxels"],
                f"{r['dice']:.4f}",
                r["missing_sequences"],
            ]
            for r in rows
        ],
        ["patient", "slices", "true voxels", "predicted voxels", "Dice", "sequences"],
    )
    dices = [r["dice"] for r in rows]
    print(
        f"\nmodel {model}: mean Dice {statistics.fmean(dices):.4f}, median Dice "
        f"{statistics.median(dices):.4f} over {len(rows)} patient(s)"
    )
    if skipped:
        print(f"skipped (no ground-truth masks): {', '.join(skipped)}")
    print(PROTOCOL_NOTE)


def run(args) -> int:
    folders = select(patient_folders(args.data), patient_ids(args.patients), args.data)
    if not folders:
        raise CLIError(f"no patient folders in {', '.join(args.data)}")
    seg = segmenter(args)
    post = card_postprocess(seg, args.postprocess)
    print(
        f"evaluating {seg.name} on {len(folders)} patient(s), {seg.device}, post-processing {post}"
        f"{', test-time flips' if args.tta else ''}",
        file=sys.stderr,
    )
    rows, skipped = _score(seg, post, folders)
    if not rows:
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        raise CLIError(
            f"no ground-truth masks (<patient>_<n>_mask.tif) to score against for "
            f"{', '.join(skipped[:5])}{more}"
        )
    _print_summary(rows, skipped, seg.name)
    if args.csv:
        for r in rows:
            r["dice"] = f"{r['dice']:.4f}"
            r["model"] = seg.name
        write_csv(Path(args.csv), rows, CSV_COLUMNS)
        print(f"wrote {args.csv}")
    return 0
