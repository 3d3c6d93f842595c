"""``lggseg evaluate``: per-volume Dice against the expert masks (LGG) or label files (NIfTI
cases, scored on the scan's own grid through ``geometry.segment_case``), with our protocol."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from ._common import (
    LGG,
    CLIError,
    ProgressBar,
    add_engine_options,
    card_postprocess,
    find_inputs,
    patient_ids,
    print_table,
    segmenter,
    select,
    warn,
    warnings_as_lines,
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
    "notes",
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
        help="kaggle_3m-style root or patient folders; NIfTI case folders with a label file "
        "(<case>_seg.nii.gz, any label > 0 is tumour) or a folder of them; mixed freely",
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


def _truth_and_result(seg, post, case, label: str):
    """(case id, slices, ground truth, Segmentation, notes) of one case; the truth is None
    (and nothing is segmented) when the case has no expert mask or label file."""
    from .. import lgg_io
    from ..cases import read_case
    from ..geometry import segment_case

    if case.kind == LGG:
        patient = lgg_io.read_patient(case.path)
        truth, image, notes = patient.mask, patient.image, []
        case_id = patient.patient_id
    else:
        with warnings_as_lines():
            scan = read_case(case.path)
        truth, image, notes, case_id = scan.label, scan.image, scan.notes, scan.case_id
    if truth is None:
        return case_id, len(image), None, None, notes
    bar = ProgressBar(f"{label} {case_id}")
    try:
        if case.kind == LGG:
            result = seg.segment(image, 0.5, post, progress=bar.update)
        else:
            result = segment_case(seg, scan, threshold=0.5, postprocess=post, progress=bar.update)
    finally:
        bar.close()
    return case_id, len(image), truth, result, notes


def _score(seg, post, cases) -> tuple[list[dict], list[str], list[str]]:
    """Dice rows of the cases with ground truth, the ids of those without, and the cases that
    could not be read (each said in one error line; the others are still scored)."""
    from .. import lgg_io, metrics, scan_io

    rows, skipped, failed = [], [], []
    for k, case in enumerate(cases, 1):
        try:
            case_id, slices, truth, result, notes = _truth_and_result(
                seg, post, case, f"[{k}/{len(cases)}]"
            )
        except (lgg_io.LGGFormatError, scan_io.ScanFormatError) as exc:
            warn(str(exc))
            failed.append(case.name)
            continue
        if truth is None:
            skipped.append(case_id)
            continue
        rows.append(
            {
                "patient": case_id,
                "slices": slices,
                "true_voxels": int(truth.sum()),
                "predicted_voxels": int(result.mask.sum()),
                "dice": metrics.dice(result.mask, truth),
                "missing_sequences": result.sequences_note,
                "seconds": round(result.seconds, 2),
                "notes": "; ".join(notes),
            }
        )
    return rows, skipped, failed


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
        print(f"skipped (no ground-truth masks or label file): {', '.join(skipped)}")
    print(PROTOCOL_NOTE)


def _no_truth_error(skipped: list[str]) -> CLIError:
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return CLIError(
        "no ground truth to score against (LGG: <patient>_<n>_mask.tif; NIfTI: a label file "
        f"such as <case>_seg.nii.gz) for {', '.join(skipped[:5])}{more}"
    )


def run(args) -> int:
    cases, failed = find_inputs(args.data)  # inputs holding no case count as failed
    cases = select(cases, patient_ids(args.patients), args.data)
    seg = segmenter(args)
    post = card_postprocess(seg, args.postprocess)
    print(
        f"evaluating {seg.name} on {len(cases)} case(s), {seg.device}, post-processing {post}"
        f"{', test-time flips' if args.tta else ''}",
        file=sys.stderr,
    )
    rows, skipped, unread = _score(seg, post, cases)
    failed += unread
    if not rows:
        if skipped:
            raise _no_truth_error(skipped)
        raise CLIError(f"no case could be read: {', '.join(failed)}")
    _print_summary(rows, skipped, seg.name)
    if args.csv:
        for r in rows:
            r["dice"] = f"{r['dice']:.4f}"
            r["model"] = seg.name
        write_csv(Path(args.csv), rows, CSV_COLUMNS)
        print(f"wrote {args.csv}")
    if failed:
        warn(f"{len(failed)} case(s) not scored: {', '.join(failed)}")
        return 2
    return 0
