"""``lggseg features``: tumour shape features per patient (napari_lggseg.shape), one CSV row each.

The masks are the expert ones in the patient folders, the model's predictions, or corrections
folders (``DIR/<patient>``, as written by napari or ``lggseg segment --out DIR``). LGG TIFF
slices carry no voxel spacing: ``--spacing Z Y X`` sets it (default 1 1 1 mm) and the
``spacing_mm`` column records it; the three study features do not depend on it (see
napari_lggseg.shape), the volume and the mm descriptors do. When a folder's root holds the
dataset's ``data.csv``, its genomic and clinical columns are appended. NIfTI cases (a case
folder, a FLAIR file or a folder of case folders) use their own voxel spacing; their expert mask
is the case's label file (``*_seg.nii.gz``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ._common import (
    PROG,
    CLIError,
    ProgressBar,
    add_engine_options,
    add_spacing_option,
    card_postprocess,
    check_spacing,
    fmt,
    patient_folders,
    segmenter,
    warn,
    write_csv,
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "features",
        help="tumour shape features per patient, as a CSV",
        description="Measure each patient's tumour: volume (mL), bounding ellipsoid volume "
        "ratio, angular standard deviation and margin fluctuation (Mazurowski et al. 2017, "
        "Buda et al. 2019) and scikit-image shape descriptors; one CSV row per patient, with "
        "the genomic/clinical columns of the root's data.csv when there is one. Undefined "
        "values (an empty mask) are empty cells.",
    )
    p.add_argument("inputs", nargs="+", metavar="PATIENT_DIR|KAGGLE_ROOT|NIFTI_CASE")
    p.add_argument(
        "--masks",
        choices=("expert", "predicted", "corrections"),
        default="expert",
        help="expert masks in the folders (default), the model's predictions, or the "
        "corrections folders under --corrections",
    )
    p.add_argument(
        "--corrections", metavar="DIR", help="folder of corrections folders, DIR/<patient>"
    )
    add_spacing_option(p)
    p.add_argument("--out", required=True, metavar="FILE.csv")
    p.add_argument(
        "--threshold", type=float, default=0.5, help="with --masks predicted (default 0.5)"
    )
    add_engine_options(p, "with --masks predicted; default: the model card's method")
    p.set_defaults(run=run)


def _check_args(args, folders: list[Path]) -> Path:
    check_spacing(args)
    if args.masks == "corrections" and not args.corrections:
        raise CLIError("--masks corrections needs --corrections DIR (its DIR/<patient> folders)")
    if args.corrections and args.masks != "corrections":
        raise CLIError("--corrections DIR is read only with --masks corrections")
    if args.model and args.masks != "predicted":
        raise CLIError("--model is used only with --masks predicted")
    if args.corrections and not Path(args.corrections).is_dir():
        raise CLIError(f"{args.corrections}: no such folder")
    out = Path(args.out)
    if out.is_dir():
        raise CLIError(f"{out}: is a folder; give the CSV file to write")
    inputs = {f.resolve() for f in folders} | {f.parent.resolve() for f in folders}
    if out.resolve().parent in inputs and out.name.lower().endswith((".tif", "data.csv")):
        raise CLIError(f"{out}: would overwrite a file of the dataset; write elsewhere")
    return out


def _mask_of(args, folder: Path, seg, post: str):
    """(patient id, mask, source label) for one folder."""
    from .. import lgg_io

    if args.masks == "corrections":
        c = lgg_io.read_corrections(Path(args.corrections) / folder.name)
        return c.patient_id, c.mask, f"corrections {c.folder}"
    patient = lgg_io.read_patient(folder, masks=args.masks == "expert")
    if args.masks == "expert":
        if patient.mask is None:
            raise lgg_io.LGGFormatError(
                f"{folder}: no expert masks ({patient.patient_id}_<n>_mask.tif); "
                "use --masks predicted"
            )
        return patient.patient_id, patient.mask, "expert"
    bar = ProgressBar(f"{patient.patient_id}")
    try:
        result = seg.segment(patient.image, args.threshold, post, progress=bar.update)
    finally:
        bar.close()
    return patient.patient_id, result.mask, f"predicted {seg.name}"


def _clinical(folders: list[Path]):
    """(columns, rows) of the data.csv of the folders' roots, merged; ([], {}) when none."""
    from ..shape import read_clinical_table

    columns: list[str] = []
    rows: dict = {}
    for root in dict.fromkeys(f.parent for f in folders):
        table = read_clinical_table(root)
        if table:
            columns += [c for c in table[0] if c not in columns]
            rows.update(table[1])
    return columns, rows


def _split_inputs(inputs) -> tuple[list[Path], list[Path]]:
    """(LGG patient folders, NIfTI cases) named on the command line."""
    from .. import lgg_io
    from ..cases import find_cases

    lgg, cases = [], []
    for p in map(Path, inputs):
        if p.exists() and not (lgg_io.is_patient_folder(p) or lgg_io.is_patient_root(p)):
            found = find_cases(p)
            if found:
                cases += found
                continue
        lgg.append(p)
    return (patient_folders(lgg) if lgg else []), cases


def _case_mask(args, case_path: Path, seg, post: str):
    """(case id, mask, spacing, source label) of a NIfTI case."""
    from .. import scan_io
    from ..cases import read_case
    from ..geometry import segment_case

    if args.masks == "corrections":
        raise CLIError(f"{case_path}: --masks corrections reads LGG corrections folders only")
    case = read_case(case_path)
    if args.masks == "expert":
        if case.label is None:
            raise scan_io.ScanFormatError(
                f"{case_path}: no label file (*_seg.nii.gz) to measure; use --masks predicted"
            )
        return case.case_id, case.label, case.spacing, "expert"
    result = segment_case(seg, case, threshold=args.threshold, postprocess=post)
    return case.case_id, result.mask, case.spacing, f"predicted {seg.name}"


def run(args) -> int:
    from ..shape import ROW_KEYS, clinical_for, feature_row

    folders, cases = _split_inputs(args.inputs)
    if not folders and not cases:
        raise CLIError(f"no patient folders or NIfTI cases in {', '.join(args.inputs)}")
    out = _check_args(args, [*folders, *cases])
    clinical_columns, clinical_rows = _clinical(folders)
    seg = post = None
    if args.masks == "predicted":
        seg = segmenter(args)
        post = card_postprocess(seg, args.postprocess)
        print(f"model {seg.name} on {seg.device}, post-processing {post}", file=sys.stderr)
    columns = (*ROW_KEYS, *clinical_columns)
    rows, failed = [], []
    from ..lgg_io import LGGFormatError
    from ..scan_io import ScanFormatError

    for item in [*folders, *cases]:
        try:
            if item in cases:
                pid, mask, spacing, source = _case_mask(args, item, seg, post)
            else:
                pid, mask, source = _mask_of(args, item, seg, post)
                spacing = args.spacing
        except (LGGFormatError, ScanFormatError, FileNotFoundError) as exc:  # a batch goes on
            warn(str(exc))
            failed.append(item.name)
            continue
        row = feature_row(pid, mask, spacing, source)
        row.update(clinical_for(pid, clinical_rows) or {})
        rows.append({k: fmt(v, ".6g") if isinstance(v, float) else v for k, v in row.items()})
        write_csv(out, rows, columns)  # after each patient: a stopped run keeps its rows
        print(
            f"{pid}: {fmt(row['volume_ml'], '.2f')} mL, BEVR {fmt(row['bounding_ellipsoid_volume_ratio'])}, "
            f"angular SD {fmt(row['angular_sd'])}, margin fluctuation {fmt(row['margin_fluctuation'])}"
        )
    if rows:
        spacings = ", ".join(dict.fromkeys(r["spacing_mm"] for r in rows))
        print(f"wrote {len(rows)} row(s) to {out} (spacing {spacings} mm)")
    if failed:
        print(
            f"{PROG}: error: {len(failed)} patient(s) not measured: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 2
    return 0
