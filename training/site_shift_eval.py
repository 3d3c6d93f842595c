"""Site shifts on the validation split: each model, each synthetic shift, each patient -> SITE_SHIFT.md.

Each shift of ``napari_lggseg.site_shift.SHIFTS`` is applied, one at a time, to the 10
validation patients of ``training/splits.json`` (patients no model trained on; the shift's random
draw is fixed per shift and patient, so every model sees the same shifted scans) and each model
segments them. Shifts that make slices thinner are measured twice: as they come, and through
``geometry.segment_case`` (resampled through-plane to its default slice spacing, as ``lggseg
segment`` does with a NIfTI scan), assuming the LGG set's slices are 5 mm thick. Dice follows
the reference protocol (threshold 0.5, largest 3-D component, every slice).

A model is ``LABEL=MODEL`` or ``LABEL=MODEL:RECIPE`` (a model name or folder; RECIPE replaces the
card's preprocessing recipe, to measure an inference-side change without training). Rows are
cached per label in ``training/site_shift/LABEL.json``; ``--report`` writes the tables with the
paired difference of each model to the first one (per patient, bootstrap 95 % CI)::

    python training/site_shift_eval.py --model lgg-fast=lgg-fast \\
        --model lgg-fast+robust=lgg-fast:robust-zscore --model lgg-site=lgg-site --brats --report

The two BraTS cases in ``../shared/external/brats18`` (``--brats``) are read with
``cases.read_case`` and segmented with ``geometry.segment_case``: a sanity check, never a
selection criterion.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_lggseg import geometry, lgg_io, metrics, models, site_shift
from napari_lggseg.inference import Segmenter
from napari_lggseg.preprocess import Recipe

HERE = Path(__file__).parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "lgg" / "kaggle_3m"
DEFAULT_BRATS = HERE.parent.parent / "shared" / "external" / "brats18"
CACHE = HERE / "site_shift"
LGG_SLICE_MM = 5.0  # assumed thickness of the LGG set's slices (20-36 slices over the head)
THIN = ("thin slices", "BRATS-like")


class _Case:
    """What geometry.segment_case needs of a scan: image, spacing, missing sequences."""

    def __init__(self, image, spacing):
        self.image, self.spacing = image, spacing
        self.missing_sequences = lgg_io.missing_sequences(image)


def segmenter_for(spec: str) -> tuple[str, Segmenter]:
    label, _, target = spec.partition("=")
    name, _, recipe_name = (target or label).partition(":")
    model, info = models.load_model(name)
    recipe = Recipe.from_dict(info.card["preprocessing"])
    if recipe_name:
        recipe = Recipe(recipe_name, recipe.size, recipe.context, recipe.channels)
    return label, Segmenter(model, recipe, device="cpu", name=info.name)


def score(prob: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    binary = (prob >= 0.5).astype(np.uint8)
    return {
        "dice": metrics.dice(metrics.largest_component(binary), truth),
        "dice_min_size": metrics.dice(metrics.drop_small_components(binary, prob), truth),
    }


def shifted_cases(patient, index: int, only: set[str] | None = None):
    """(shift name, image, mask, slice spacing in mm) for the clean scan and every shift (or
    those in ``only``; a shift's random draw does not depend on which others run)."""
    yield "clean", patient.image, patient.mask, LGG_SLICE_MM
    for k, (name, fn) in enumerate(site_shift.SHIFTS.items()):
        if only is not None and name not in only:
            continue
        rng = np.random.default_rng([17, k, index])
        image, mask = fn(patient.image, patient.mask, rng)
        spacing = LGG_SLICE_MM * patient.image.shape[0] / image.shape[0]
        yield name, image, mask, spacing


def evaluate_validation(
    segs: dict[str, Segmenter],
    data: Path,
    splits: dict,
    only: set[str] | None = None,
    resampled_only: bool = False,
) -> dict:
    rows: dict[str, list] = {label: [] for label in segs}
    for i, pid in enumerate(splits["validation"]):
        t0 = time.time()
        patient = lgg_io.read_patient(data / pid)
        for shift, image, mask, spacing in shifted_cases(patient, i, only):
            for label, seg in segs.items():
                if not (resampled_only and shift in THIN):
                    prob, _ = seg.probabilities(image)
                    rows[label].append({"shift": shift, "patient": pid, **score(prob, mask)})
                if shift in THIN:
                    case = _Case(image, (spacing, 1.0, 1.0))
                    prob = geometry.segment_case(seg, case, postprocess="none").prob
                    rows[label].append(
                        {"shift": f"{shift}, resampled", "patient": pid, **score(prob, mask)}
                    )
        print(f"{pid}: {time.time() - t0:.0f} s", flush=True)
    return rows


def evaluate_brats(segs: dict[str, Segmenter], root: Path, resampled_only: bool = False) -> dict:
    from napari_lggseg.cases import read_case

    rows: dict[str, list] = {label: [] for label in segs}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        case = read_case(folder)
        truth = np.asarray(case.label) > 0
        for label, seg in segs.items():
            for spacing in (geometry.DEFAULT_SLICE_SPACING, None)[: 1 if resampled_only else 2]:
                s = geometry.segment_case(seg, case, slice_spacing=spacing, postprocess="none")
                rows[label].append(
                    {
                        "case": folder.name,
                        "resampled": spacing is not None,
                        "missing": list(getattr(case, "missing_sequences", ()) or ()),
                        **score(s.prob, truth),
                    }
                )
        print(f"{folder.name} done", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", action="append", default=[], help="LABEL=MODEL[:RECIPE]")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--brats", action="store_true", help="also the BraTS sanity cases")
    ap.add_argument("--brats-root", type=Path, default=DEFAULT_BRATS)
    ap.add_argument(
        "--shifts", default=None, help="comma-separated subset of site_shift.SHIFTS (default all)"
    )
    ap.add_argument("--report", action="store_true", help="write training/SITE_SHIFT.md")
    ap.add_argument(
        "--resampled-only",
        action="store_true",
        help="thin-slice scans only through segment_case's through-plane resampling (cheaper)",
    )
    ap.add_argument(
        "--order", default=None, help="labels for the report, baseline first (default: all cached)"
    )
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    splits = json.loads((HERE / "splits.json").read_text())
    CACHE.mkdir(exist_ok=True)
    segs = dict(segmenter_for(spec) for spec in args.model)
    if segs:
        only = set(args.shifts.split(",")) if args.shifts else None
        unknown = (only or set()) - set(site_shift.SHIFTS)
        if unknown:
            raise SystemExit(
                f"unknown shifts {sorted(unknown)}: choose from {list(site_shift.SHIFTS)}"
            )
        val = evaluate_validation(segs, args.data, splits, only, args.resampled_only)
        brats = evaluate_brats(segs, args.brats_root, args.resampled_only) if args.brats else {}
        for label, seg in segs.items():
            out = {
                "label": label,
                "model": seg.name,
                "recipe": seg.recipe.to_dict(),
                "validation": val[label],
                "brats": brats.get(label, []),
                "command": "python training/site_shift_eval.py "
                + " ".join(f"--model {m}" for m in args.model if m.startswith(label + "="))
                + (f" --shifts '{args.shifts}'" if args.shifts else "")
                + (" --brats" if args.brats else "")
                + (" --resampled-only" if args.resampled_only else ""),
            }
            (CACHE / f"{label}.json").write_text(json.dumps(out, indent=1))
    if args.report:
        from site_shift_report import write_report

        write_report(CACHE, HERE / "SITE_SHIFT.md", args.order.split(",") if args.order else None)


if __name__ == "__main__":
    main()
