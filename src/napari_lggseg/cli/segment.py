"""``lggseg segment``: predictions napari and training open, plus a CSV, for LGG patient folders
(TIFF corrections folders) and scan cases (a NIfTI mask on the scan's own grid), mixed."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from ._common import (
    LGG,
    CLIError,
    ProgressBar,
    add_engine_options,
    add_spacing_option,
    card_postprocess,
    check_spacing,
    find_inputs,
    fmt,
    segmenter,
    warn,
    warnings_as_lines,
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
    "volume_ml",
    "spacing_mm",
    "prediction",
    "notes",
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment patients and scans; write predictions and a CSV",
        description="Segment each LGG patient folder and NIfTI case (a .nii/.nii.gz file, a "
        "case folder, or a folder of them; mixed freely). An LGG patient gets OUT/<patient> (a "
        "corrections folder that napari and `lggseg train` open); a NIfTI case gets "
        "OUT/<case>/<case>_mask.nii.gz (uint8 0/1 on the FLAIR's grid, with its exact affine) "
        "and a sidecar. A folder holding a person's corrections is never touched: the "
        "prediction then goes to OUT/<case>.prediction-<k>. OUT/segmentation.csv has one row "
        "per case: tumour volume in mL (NIfTI: the file's own voxel size; LGG: --spacing), Dice "
        "against a label file or expert masks when present, missing sequences, what was done "
        "to the scan, and flagged_slices: the slices to check first, most uncertain first, "
        "counted from 1 along the axial (foot to head) axis, as the numbers in LGG file names.",
    )
    p.add_argument("inputs", nargs="+", metavar="PATIENT_DIR|KAGGLE_ROOT|NIFTI_CASE")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument(
        "--threshold", type=float, default=0.5, help="probability threshold (default 0.5)"
    )
    add_spacing_option(p, "for the volume in mL")
    add_engine_options(p, "default: the model card's method, else min-size")
    p.set_defaults(run=run)


# --------------------------------------------------------------------------- where predictions go


def _scan_saved_work(folder: Path, case_id: str) -> str | None:
    """:func:`lgg_io.saved_work` for a folder of masks saved by ``scan_masks.save_mask``."""
    from .. import lgg_io, scan_io
    from ..scan_masks import mask_paths

    if not scan_io.is_mask_folder(folder):
        return None
    mask_file, sidecar = mask_paths(folder, case_id)
    others = sorted(
        p.name for p in folder.glob(f"*{scan_io.MASK_SIDECAR_SUFFIX}") if p.name != sidecar.name
    )
    if others:
        return f"masks of another case ({others[0]})"
    try:
        meta = json.loads(sidecar.read_text())
        edited = mask_file.stat().st_mtime > sidecar.stat().st_mtime + 1.0
    except (OSError, ValueError):
        return "corrections whose sidecar cannot be read"
    return lgg_io.work_in_sidecar(
        meta, edited, "a prediction whose mask was edited after it was saved"
    )


def saved_work(folder: Path, case_id: str) -> str | None:
    """What a person's work in ``folder`` amounts to (TIFF corrections or a saved NIfTI mask),
    or None when there is none to lose. Never raises."""
    from .. import lgg_io

    return lgg_io.saved_work(folder) or _scan_saved_work(folder, case_id)


def _holds_only_a_prediction(folder: Path, case_id: str) -> bool:
    from .. import lgg_io, scan_io

    ours = lgg_io.is_corrections_folder(folder) or scan_io.is_mask_folder(folder)
    return ours and saved_work(folder, case_id) is None


def prediction_folder(out_dir: Path, case_id: str, taken=()) -> tuple[Path, str | None]:
    """Where a case's prediction goes, and a note when that is not ``OUT/<case>``.

    A folder holding a person's corrections (LGG or NIfTI) is never touched, nor one this run
    already wrote (``taken``: two inputs with one id): the prediction goes to the first
    ``OUT/<case>.prediction-<k>`` that is free or holds only an earlier prediction."""
    first = out_dir / case_id
    work = saved_work(first, case_id)
    if work is None and first.resolve() not in taken:
        return first, None
    why = [f"{first} " + (f"holds {work}" if work else "was written earlier in this run")]
    k = 2
    while True:
        target = out_dir / f"{case_id}.prediction-{k}"
        if target.resolve() not in taken and (
            not target.exists() or _holds_only_a_prediction(target, case_id)
        ):
            return target, f"{', '.join(why)}: left untouched, prediction in {target}"
        if target.resolve() not in taken and (work := saved_work(target, case_id)):
            why.append(f"{target} holds {work}")
        k += 1


def _check_scan_target(target: Path, case_id: str) -> None:
    """As ``lgg_io.write_corrections`` does: an existing folder holding anything but this case's
    earlier prediction is refused (save_mask itself refuses the case's own folder and scans)."""
    from ..scan_io import ScanWriteError, is_nifti_name
    from ..scan_masks import mask_paths

    if not target.is_dir():
        return
    ours = {p.name for p in mask_paths(target, case_id)}
    foreign = sorted(
        p.name
        for p in target.iterdir()
        if p.name not in ours and not p.name.startswith(".") and not is_nifti_name(p.name)
    )
    if foreign:
        raise ScanWriteError(
            f"{target}: this folder already holds other files ({foreign[0]}); a prediction goes "
            "to a new or empty folder (or over an earlier prediction of the same case)"
        )


# --------------------------------------------------------------------------- one case


def _flagged_extra(flagged, args, post) -> dict:
    return {
        "threshold": args.threshold,
        "postprocess": post,
        "flagged_slices": [z for z, _ in flagged],
        "flagged_uncertain_voxels": [round(v, 1) for _, v in flagged],
    }


def _segment_patient(seg, args, post, folder: Path, out_dir: Path, label: str, taken) -> dict:
    """Segment one LGG patient, write its corrections folder; returns its CSV row."""
    from .. import lgg_io, metrics
    from ..uncertainty import slices_to_review

    patient = lgg_io.read_patient(folder)
    bar = ProgressBar(f"{label} {patient.patient_id}")
    try:
        result = seg.segment(patient.image, args.threshold, post, progress=bar.update)
    finally:
        bar.close()
    flagged = slices_to_review(result.prob)  # the list the Segment tumour widget shows
    target, note = prediction_folder(out_dir, patient.patient_id, taken)
    # the sidecar counts slices from 0 like its reviewed_slices; the CSV gives the numbers in the
    # file names (an LGG folder's slices are numbered 1..N without gaps, so number = index + 1)
    extra = _flagged_extra(flagged, args, post)
    extra["flagged_slice_files"] = [patient.slice_files[z] for z, _ in flagged]
    lgg_io.write_corrections(
        target,
        result.mask,
        patient.patient_id,
        folder,
        reviewed_slices=[],
        model=seg.name,
        extra={"kind": "prediction", **extra},
    )
    taken.add(target.resolve())
    if note:
        print(f"{patient.patient_id}: {note}", file=sys.stderr)
    truth = patient.mask
    d = metrics.dice(result.mask, truth) if truth is not None else None
    return _row(patient.patient_id, result, d, args.spacing, flagged, target, [])


def _segment_scan(seg, args, post, path: Path, out_dir: Path, label: str, taken) -> dict:
    """Segment one scan case, save its mask on the scan's own grid; returns its CSV row."""
    import numpy as np

    from .. import metrics, scan_masks
    from ..cases import read_case
    from ..geometry import segment_case
    from ..session import network_note
    from ..uncertainty import slices_to_review

    with warnings_as_lines():  # a very large volume is announced before it is read
        case = read_case(path)
    bar = ProgressBar(f"{label} {case.case_id}")
    try:
        result = segment_case(
            seg, case, threshold=args.threshold, postprocess=post, progress=bar.update
        )
    finally:
        bar.close()
    flagged = slices_to_review(result.prob)
    notes = [*case.notes, *network_note(seg, case.shape[0], case.spacing[0])]
    target, note = prediction_folder(out_dir, case.case_id, taken)
    _check_scan_target(target, case.case_id)
    extra = {**_flagged_extra(flagged, args, post), "notes": notes}
    mask_file = scan_masks.save_mask(
        case, result.mask, target, kind="prediction", model=seg.name, extra=extra
    )
    taken.add(target.resolve())
    if note:
        print(f"{case.case_id}: {note}", file=sys.stderr)
    d = metrics.dice(result.mask, case.label) if case.label is not None else None
    voxel_mm3 = abs(float(np.linalg.det(case.model_affine[:3, :3])))  # oblique grids too
    return _row(case.case_id, result, d, case.spacing, flagged, mask_file, notes, voxel_mm3)


def _row(case_id, result, d, spacing, flagged, written: Path, notes, voxel_mm3=None) -> dict:
    from ..shape import spacing_text

    voxels = int(result.mask.sum())
    voxel_mm3 = math.prod(spacing) if voxel_mm3 is None else voxel_mm3
    ml = voxels * voxel_mm3 / 1000.0
    print(
        f"{case_id}: {len(result.mask)} slices, {voxels} tumour voxels = {ml:.2f} mL"
        + (f", Dice {d:.3f}" if d is not None else "")
        + f", {result.seconds:.1f} s"
        + ("" if not result.missing else f" ({result.sequences_note})")
    )
    return {
        "patient": case_id,
        "slices": len(result.mask),
        "tumour_voxels": voxels,
        "dice": fmt(d, ".4f"),
        "missing_sequences": result.sequences_note,
        "seconds": f"{result.seconds:.2f}",
        "model": result.model,
        "flagged_slices": " ".join(str(z + 1) for z, _ in flagged),
        "volume_ml": f"{ml:.3f}",
        "spacing_mm": spacing_text(spacing),
        "prediction": str(written),
        "notes": "; ".join(notes),
    }


# --------------------------------------------------------------------------- the command


def _check_args(args, out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"{out_dir}: exists and is not a folder")
    check_spacing(args)


def run(args) -> int:
    from ..lgg_io import LGGFormatError, LGGWriteError
    from ..scan_io import ScanFormatError, ScanWriteError

    cases, failed = find_inputs(args.inputs)  # inputs holding no case count as failed
    n_bad = len(failed)
    out_dir = Path(args.out)
    _check_args(args, out_dir)
    seg = segmenter(args)
    post = card_postprocess(seg, args.postprocess)
    n_lgg = sum(c.kind == LGG for c in cases)
    print(
        f"{len(cases)} case(s) ({n_lgg} LGG patient folder(s), {len(cases) - n_lgg} scan "
        f"case(s)), model {seg.name} on {seg.device}, threshold {args.threshold}, "
        f"post-processing {post}{', test-time flips' if args.tta else ''}",
        file=sys.stderr,
    )
    rows: list[dict] = []
    taken: set[Path] = set()
    csv_path = out_dir / "segmentation.csv"
    for k, case in enumerate(cases, 1):
        one = _segment_patient if case.kind == LGG else _segment_scan
        try:
            rows.append(one(seg, args, post, case.path, out_dir, f"[{k}/{len(cases)}]", taken))
        except (LGGFormatError, LGGWriteError, ScanFormatError, ScanWriteError) as exc:
            warn(str(exc))  # the message names the file; the batch goes on
            failed.append(case.name)
            continue
        write_csv(csv_path, rows, CSV_COLUMNS)  # after each case: a stopped run keeps its rows
    if rows:
        print(f"wrote {len(rows)} prediction(s) and {csv_path}")
    if failed:
        total = len(cases) + n_bad
        warn(f"{len(failed)} of {total} case(s) not segmented: {', '.join(failed)}")
        return 2
    return 0
