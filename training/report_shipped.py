"""Measure a shipped model and write training/REPORT.md (plus figures) from real runs.

    python training/report_shipped.py --model lgg-fast [--write-card]

1. Validation split (10 patients): per-volume Dice for each post-processing (none, largest 3-D
   component, drop small components) with and without flip TTA -> the default is chosen here,
   on validation only (``--write-card`` records it in the model card).
2. Test split (14 patients), looked at once with that choice: per-patient Dice (our protocol),
   the largest-component protocol beside it, and the same patients with every channel replaced
   by FLAIR.
3. The patients whose sequences the LGG dataset substituted, as their own group.
4. Uncertainty: Spearman rank correlation of the per-slice score with per-slice error voxels.
5. CPU seconds per volume end to end (read, preprocess, infer, write), and the validation curve.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from napari_lggseg import lgg_io, metrics, models
from napari_lggseg.devices import cpu_model
from napari_lggseg.inference import Segmenter
from napari_lggseg.uncertainty import slice_uncertainty

HERE = Path(__file__).parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "lgg" / "kaggle_3m"
POSTS = ("none", "largest", "min-size")


def all_flair(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., 1:2], 3, axis=-1)


def probs_for(seg: Segmenter, image: np.ndarray) -> np.ndarray:
    return seg.probabilities(image)[0]


def dice_table(prob: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    binary = (prob >= 0.5).astype(np.uint8)
    return {p: metrics.dice(metrics.postprocess(binary, p, prob=prob), truth) for p in POSTS}


def summarise(values) -> str:
    v = np.asarray(list(values), float)
    return f"{v.mean():.3f} / {np.median(v):.3f}"


def site_shift_section(labels: str | None) -> list[str]:
    """The ablation on synthetic site shifts of the validation split (rows cached by
    training/site_shift_eval.py; no model runs here)."""
    from site_shift_report import brats_table, common_shifts, diff_table, load, mean_table

    runs = load(HERE / "site_shift", labels.split(",") if labels else None)
    if not runs:
        return []
    shifts = common_shifts(runs)
    return [
        "## Site shifts and ablation (validation split only)",
        "",
        "Each synthetic shift (`napari_lggseg.site_shift`) applied to the 10 validation patients; "
        "Dice with threshold 0.5, largest 3-D component, every slice. Rows: "
        "`python training/site_shift_eval.py --model LABEL=MODEL[:RECIPE] ...`; details and "
        "commands in [SITE_SHIFT.md](SITE_SHIFT.md).",
        "",
        *mean_table(runs, shifts),
        "",
        f"Paired differences to `{runs[0]['label']}` (per patient, mean [bootstrap 95 % CI], n = 10):",
        "",
        *diff_table(runs, shifts),
        "",
        "BraTS-2018 cases, a sanity check (never used to choose), whole tumour:",
        "",
        *brats_table(runs),
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=HERE / "REPORT.md")
    ap.add_argument(
        "--write-card", action="store_true", help="record the validation-chosen post-processing"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--site-shift-labels",
        default=None,
        help="comma-separated labels of training/site_shift/*.json for the ablation section "
        "(the first is the baseline); default: all cached",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    splits = json.loads((HERE / "splits.json").read_text())
    name = args.model or models.default_model_name("cpu")
    info = models.get_model(name)
    plain = Segmenter.from_store(name, device="cpu", tta=False)
    flipped = Segmenter.from_store(name, device="cpu", tta=True)
    root = args.data

    # 1. validation: choose TTA and post-processing
    val = {}
    rho = []
    for pid in splits["validation"]:
        p = lgg_io.read_patient(root / pid)
        pr, prt = probs_for(plain, p.image), probs_for(flipped, p.image)
        val[pid] = {"plain": dice_table(pr, p.mask), "tta": dice_table(prt, p.mask)}
        err = ((pr >= 0.5) != (p.mask > 0)).sum(axis=(1, 2))
        score = slice_uncertainty(pr)
        r = spearmanr(score, err).statistic
        if np.isfinite(r):
            rho.append(r)
    choices = {
        (t, pp): float(np.mean([val[k][t][pp] for k in val]))
        for t in ("plain", "tta")
        for pp in POSTS
    }
    # flip TTA doubles inference time: keep it only if its best beats the plain best by >= 0.005;
    # then ties (within 0.001) go to dropping small components: unlike keeping only the largest
    # component, it cannot erase a tumour that a bigger false positive outgrew
    best_of = {t: max(choices[(t, pp)] for pp in POSTS) for t in ("plain", "tta")}
    best_t = "tta" if best_of["tta"] - best_of["plain"] >= 0.005 else "plain"
    pref = {"min-size": 2, "largest": 1, "none": 0}
    best_pp = max(POSTS, key=lambda pp: (round(choices[(best_t, pp)], 3), pref[pp]))
    chosen = flipped if best_t == "tta" else plain

    # 2./3. test split once, as given and with every channel FLAIR; substituted group
    test_rows = []
    for pid in splits["test"]:
        p = lgg_io.read_patient(root / pid)
        pr = probs_for(chosen, p.image)
        pf = probs_for(chosen, all_flair(p.image))
        d = dice_table(pr, p.mask)
        df = dice_table(pf, p.mask)
        test_rows.append(
            {
                "patient": pid,
                "slices": p.image.shape[0],
                "tumour_voxels": int(p.mask.sum()),
                "dice": d[best_pp],
                "dice_largest": d["largest"],
                "dice_none": d["none"],
                "dice_all_flair": df[best_pp],
                "missing": lgg_io.describe_sequences(lgg_io.missing_sequences(p.image)),
            }
        )
    subst_rows = []
    split_of = {pid: k for k in ("train", "validation", "test") for pid in splits[k]}
    for folder in lgg_io.list_patients(root):
        p = lgg_io.read_patient(folder)
        miss = lgg_io.missing_sequences(p.image)
        if miss:
            pr = probs_for(chosen, p.image)
            subst_rows.append(
                {
                    "patient": p.patient_id,
                    "split": split_of.get(p.patient_id, "?"),
                    "missing": ", ".join(miss),
                    "dice": dice_table(pr, p.mask)[best_pp],
                }
            )

    # 5. speed: end to end on test patients with ~33 slices
    timing = []
    with tempfile.TemporaryDirectory() as tmp:
        for pid in splits["test"]:
            t0 = time.perf_counter()
            p = lgg_io.read_patient(root / pid)
            s = chosen.segment(p.image, postprocess=best_pp)
            lgg_io.write_corrections(Path(tmp) / pid, s.mask, pid, p.folder, model=name)
            timing.append((p.image.shape[0], time.perf_counter() - t0))
    per33 = [t / z * 33 for z, t in timing]

    # curve
    fig_dir = HERE / "figures"
    fig_dir.mkdir(exist_ok=True)
    curve = fig_dir / f"{name}_validation_curve.png"
    hist = info.card.get("history", [])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ep = [h["epoch"] for h in hist if h.get("val_dice") is not None]
    ax.plot(
        ep,
        [h["val_dice"] for h in hist if h.get("val_dice") is not None],
        "o-",
        label="validation Dice",
    )
    ax2 = ax.twinx()
    ax2.plot(
        [h["epoch"] for h in hist if h.get("loss") is not None],
        [h["loss"] for h in hist if h.get("loss") is not None],
        "s--",
        color="tab:red",
        label="train loss",
    )
    ax.set_xlabel(f"epoch ({info.card['hyperparameters'].get('steps_per_epoch')} steps)")
    ax.set_ylabel("mean per-volume Dice (10 val patients)")
    ax2.set_ylabel("Dice+BCE loss")
    ax.set_ylim(0, 1)
    fig.legend(loc="lower center", ncol=2)
    fig.tight_layout()
    fig.savefig(curve, dpi=100)

    if args.write_card:
        card = dict(info.card)
        card["postprocessing"] = {
            "threshold": 0.5,
            "method": best_pp,
            "tta": best_t == "tta",
            "chosen_on": "validation split, mean per-volume Dice",
        }
        card["metrics"]["test_mean_dice"] = float(np.mean([r["dice"] for r in test_rows]))
        card["metrics"]["test_median_dice"] = float(np.median([r["dice"] for r in test_rows]))
        card["metrics"]["test_mean_dice_all_flair"] = float(
            np.mean([r["dice_all_flair"] for r in test_rows])
        )
        (info.path / models.CARD).write_text(json.dumps(card, indent=2))

    # write the report
    test_d = [r["dice"] for r in test_rows]
    lines = [
        f"# Shipped model report: `{name}`",
        "",
        f"Generated by `python training/report_shipped.py --model {name}` on {time.strftime('%Y-%m-%d')}; "
        f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}. Splits: "
        "`training/splits.json` (patient level, stratified by institution).",
        "",
        "## Model",
        "",
        f"- Architecture: Buda et al. U-Net, width {info.card['architecture']['width']}, "
        f"{info.card['architecture']['in_channels']} input channels "
        f"({', '.join(info.card['inputs']['sequences'])} + FLAIR of {info.card['inputs']['context_slices']} "
        "neighbouring slice(s) on each side)",
        f"- Preprocessing: `{json.dumps(info.card['preprocessing'])}`",
        f"- Trained: {info.card['training']['steps']} steps in {info.card['training']['seconds'] / 60:.0f} min "
        f"({info.card.get('hardware', '')}); stopped: {info.card['training']['stopped']}; "
        f"best epoch {info.card['metrics']['best_epoch']}",
        f"- Recipe: `{info.card.get('recipe_command', '')}`",
        f"- Parent: {info.card.get('parent')}",
        "",
        "## Validation (chooses post-processing and test-time flips)",
        "",
        "Mean per-volume Dice on the 10 validation patients (our protocol):",
        "",
        "| | " + " | ".join(POSTS) + " |",
        "|---|" + "---|" * len(POSTS),
    ]
    for t in ("plain", "tta"):
        lines.append(
            f"| {'flip TTA' if t == 'tta' else 'no TTA'} | "
            + " | ".join(f"{choices[(t, pp)]:.3f}" for pp in POSTS)
            + " |"
        )
    lines += [
        "",
        f"Chosen: **{'flip TTA' if best_t == 'tta' else 'no TTA'}, post-processing `{best_pp}`** "
        "(TTA is kept only if it adds ≥ 0.005, since it doubles inference time; ties within 0.001 go "
        "to dropping small components, which cannot erase a tumour that a larger false positive outgrew).",
        "",
        f"![validation curve](figures/{curve.name})",
        "",
        "## Test split (14 patients, looked at once)",
        "",
        f"**Mean / median per-volume Dice: {summarise(test_d)}** (our protocol: threshold 0.5, "
        f"`{best_pp}` post-processing, every original slice at 256×256).",
        "",
        f"- Largest-3-D-component protocol on the same predictions: {summarise(r['dice_largest'] for r in test_rows)}",
        f"- No post-processing: {summarise(r['dice_none'] for r in test_rows)}",
        f"- Every channel replaced by FLAIR (same patients): {summarise(r['dice_all_flair'] for r in test_rows)} "
        f"(difference to complete input: {np.mean([r['dice_all_flair'] for r in test_rows]) - np.mean(test_d):+.3f})",
        "",
        "| patient | slices | tumour voxels | Dice | Dice (largest comp.) | Dice (all FLAIR) | sequences |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in test_rows:
        lines.append(
            f"| {r['patient']} | {r['slices']} | {r['tumour_voxels']} | {r['dice']:.3f} | "
            f"{r['dice_largest']:.3f} | {r['dice_all_flair']:.3f} | {r['missing']} |"
        )
    lines += [
        "",
        "## Patients whose sequences the dataset substituted with FLAIR",
        "",
        "Patients in `train` were seen in training; only the others are a fair measure.",
        "",
        "| patient | split | missing | Dice |",
        "|---|---|---|---|",
    ]
    for r in subst_rows:
        lines.append(f"| {r['patient']} | {r['split']} | {r['missing']} | {r['dice']:.3f} |")
    unseen = [r["dice"] for r in subst_rows if r["split"] != "train"]
    lines += [
        "",
        f"Unseen substituted patients: {summarise(unseen) if unseen else 'none'} (mean / median, n={len(unseen)}).",
        "",
        "## Against the published figures",
        "",
        "| | mean | median | patients | protocol |",
        "|---|---|---|---|---|",
        f"| **this model, test split** | {np.mean(test_d):.3f} | {np.median(test_d):.3f} | 14 unseen | ours: every slice, original 256², threshold 0.5 |",
        "| plain recipe (team baseline, w32 at 128², Dice loss, 75 min bf16) | 0.80 | 0.88 | 30 unseen | ours |",
        "| Buda et al. reference code, validation | 0.91 | 0.92 | 10, chosen on the same patients | cropped, resized volumes without first and last slice |",
        "| Buda et al. paper, cross-validated | 0.82 | 0.85 | 110 | per-volume |",
        "| two expert readers | ~0.84 | | | |",
        "",
        "Why they differ: the reference figure picks its checkpoint on the 10 patients it reports and scores "
        "the cropped, resized volumes without each patient's first and last slice (slices that are mostly "
        "empty and easy, but where a false positive costs a lot in our protocol); ours scores every original "
        "slice of patients never used for any choice. Our 14-patient test split is small: one patient moves the "
        "mean by ~0.02-0.05, so differences under ~0.03 are not meaningful. The team baseline was measured on the 30 "
        "hidden patients, ours on our own test split: not the same patients.",
        "",
        *site_shift_section(args.site_shift_labels),
        "## Uncertainty score (slices to check first)",
        "",
        f"Spearman rank correlation between the per-slice score (`uncertainty.slice_uncertainty`) and the "
        f"per-slice error voxels, per validation patient: mean {np.mean(rho):.2f}, min {np.min(rho):.2f}, "
        f"max {np.max(rho):.2f} (n={len(rho)}).",
        "",
        "## Speed (CPU, end to end)",
        "",
        f"Read + preprocess + infer + post-process + write a corrections folder, {torch.get_num_threads()} "
        f"threads, fp32{' (bf16 native)' if torch.cpu._is_avx512_bf16_supported() else ' (no native bf16 on this CPU)'}: "
        f"median {np.median(per33):.2f} s per 33 slices (range {min(per33):.2f}–{max(per33):.2f}) over "
        f"{len(timing)} test patients of {min(z for z, _ in timing)}–{max(z for z, _ in timing)} slices.",
        "",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    (HERE / "figures" / f"{name}_report.json").write_text(
        json.dumps(
            {
                "validation": val,
                "choices": {f"{t}/{pp}": v for (t, pp), v in choices.items()},
                "test": test_rows,
                "substituted": subst_rows,
                "uncertainty_spearman": rho,
                "seconds_per_33_slices": per33,
            },
            indent=1,
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
