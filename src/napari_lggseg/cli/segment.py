"""``lggseg segment``: predictions as corrections folders napari and training open, plus a CSV."""

from __future__ import annotations

import sys
from pathlib import Path

from ._common import (
    CLIError,
    ProgressBar,
    add_engine_options,
    card_postprocess,
    fmt,
    patient_folders,
    segmenter,
    warn,
    write_csv,
)

CSV_COLUMNS = (
    "patient",
    "slices",
    "tumour_voxels",
    "dice",
    "missing_sequences",
    "seconds",
    "model",
    "flagged_slices",
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment patients; write prediction folders and a CSV",
        description="Segment each patient; write OUT/<patient> (a corrections folder that "
        "napari and `lggseg train` open) and OUT/segmentation.csv. Its flagged_slices column "
        "lists the slices to check first (the numbers in the file names, most uncertain first).",
    )
    p.add_argument("inputs", nargs="+", metavar="PATIENT_DIR|KAGGLE_ROOT")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument(
        "--threshold", type=float, default=0.5, help="probability threshold (default 0.5)"
    )
    add_engine_options(p, "default: the model card's method, else min-size")
    p.set_defaults(run=run)


def prediction_folder(out_dir: Path, patient_id: str) -> tuple[Path, str | None]:
    """Where a patient's prediction goes, and a note when that is not ``OUT/<patient>``.

    A folder holding a person's corrections is never touched: the prediction goes to the first
    ``OUT/<patient>.prediction-<k>`` that is free or holds only an earlier prediction."""
    from .. import lgg_io

    first = out_dir / patient_id
    work = lgg_io.saved_work(first)
    if work is None:
        return first, None
    k = 2
    while True:
        target = out_dir / f"{patient_id}.prediction-{k}"
        if not target.exists() or (
            lgg_io.is_corrections_folder(target) and lgg_io.saved_work(target) is None
        ):
            return target, f"{first} holds {work}: left it as it is, prediction in {target}"
        k += 1


def _segment_one(seg, args, post, folder: Path, out_dir: Path, label: str) -> dict:
    """Segment one patient, write its prediction folder; returns its CSV row."""
    from .. import lgg_io, metrics
    from ..uncertainty import slices_to_review

    patient = lgg_io.read_patient(folder)
    bar = ProgressBar(f"{label} {patient.patient_id}")
    try:
        result = seg.segment(patient.image, args.threshold, post, progress=bar.update)
    finally:
        bar.close()
    flagged = slices_to_review(result.prob)  # the list the Segment tumour widget shows
    target, note = prediction_folder(out_dir, patient.patient_id)
    # the sidecar counts slices from 0 like its reviewed_slices; the CSV gives the numbers in the
    # file names (an LGG folder's slices are numbered 1..N without gaps, so number = index + 1)
    lgg_io.write_corrections(
        target,
        result.mask,
        patient.patient_id,
        folder,
        reviewed_slices=[],
        model=seg.name,
        extra={
            "kind": "prediction",
            "threshold": args.threshold,
            "postprocess": post,
            "flagged_slices": [z for z, _ in flagged],
            "flagged_slice_files": [patient.slice_files[z] for z, _ in flagged],
            "flagged_uncertain_voxels": [round(v, 1) for _, v in flagged],
        },
    )
    if note:
        print(f"{patient.patient_id}: {note}", file=sys.stderr)
    d = metrics.dice(result.mask, patient.mask) if patient.mask is not None else None
    print(
        f"{patient.patient_id}: {patient.image.shape[0]} slices, {int(result.mask.sum())} tumour voxels"
        + (f", Dice {d:.3f}" if d is not None else "")
        + f", {result.seconds:.1f} s"
        + ("" if not result.missing else f" ({result.sequences_note})")
    )
    return {
        "patient": patient.patient_id,
        "slices": patient.image.shape[0],
        "tumour_voxels": int(result.mask.sum()),
        "dice": fmt(d, ".4f"),
        "missing_sequences": result.sequences_note,
        "seconds": f"{result.seconds:.2f}",
        "model": seg.name,
        "flagged_slices": " ".join(str(z + 1) for z, _ in flagged),
    }


def run(args) -> int:
    from .. import lgg_io

    folders = patient_folders(args.inputs)
    if not folders:
        raise CLIError(f"no patient folders in {', '.join(args.inputs)}")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"{out_dir}: exists and is not a folder")
    seg = segmenter(args)
    post = card_postprocess(seg, args.postprocess)
    print(
        f"{len(folders)} patient(s), model {seg.name} on {seg.device}, threshold {args.threshold}, "
        f"post-processing {post}{', test-time flips' if args.tta else ''}",
        file=sys.stderr,
    )
    rows: list[dict] = []
    failed: list[str] = []
    csv_path = out_dir / "segmentation.csv"
    for k, folder in enumerate(folders, 1):
        try:
            rows.append(_segment_one(seg, args, post, folder, out_dir, f"[{k}/{len(folders)}]"))
        except (lgg_io.LGGFormatError, lgg_io.LGGWriteError) as exc:  # the batch goes on
            warn(str(exc))
            failed.append(folder.name)
            continue
        write_csv(csv_path, rows, CSV_COLUMNS)  # after each patient: a stopped run keeps its rows
    if rows:
        print(f"wrote {len(rows)} prediction folder(s) and {csv_path}")
    if failed:
        warn(f"{len(failed)} of {len(folders)} patient(s) not segmented: {', '.join(failed)}")
        return 2
    return 0
