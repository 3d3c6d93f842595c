"""Does correcting a few volumes of a new site make the model better there? A seeded simulation.

    python training/simulate_hitl.py                    # full run: HT held out, 5 draws, k = 1, 2, 3
    python training/simulate_hitl.py --quick            # smoke run (minutes) into runs/hitl-quick/
    python training/simulate_hitl.py --institution CS --base-steps 3000

1. A base model is trained on the 80 patients minus one institution (``--institution``), with the
   shipped recipe and a smaller budget, or reused from ``--base-dir`` if already there.
2. A simulated user corrects k = 1, 2, 3 volumes of the held-out institution (ground truth stands
   in for the corrections). Each draw picks the corrected volumes at random; the institution's
   remaining patients are the evaluation set of that draw (the same for every k and arm).
3. Arms, all through ``napari_lggseg.finetune.fine_tune`` with the Fine-tune widget's default
   budget: ``whole`` (all slices of the k volumes reviewed), ``uncertain`` (only the N most
   uncertain slices of each, as a person guided by the review list would touch), and ``control``
   (k volumes from the base model's own institutions: "more training" without a new site).
4. Per-volume Dice on the evaluation set before and after, paired by draw; seconds per round.
   Writes training/HITL.md and training/figures/hitl.png.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "lgg" / "kaggle_3m"


def evaluate(segmenter, patients) -> dict[str, float]:
    from napari_lggseg import metrics

    out = {}
    for p in patients:
        seg = segmenter.segment(p.image)
        out[p.patient_id] = metrics.dice(seg.mask, p.mask)
    return out


def read_volume(folder, labelled=None):
    """A patient folder as a training volume (``labelled``: trusted slices, None = all)."""
    from napari_lggseg import lgg_io
    from napari_lggseg.train_data import TrainVolume

    p = lgg_io.read_patient(folder)
    return TrainVolume(p.patient_id, p.image, p.mask, labelled)


def base_split(info) -> tuple[list[str], list[str]]:
    """The (training, validation) patients of a base model, from its card: the controls come from
    the first, forgetting is measured on the second (here and in compare_rounds.py)."""
    data = info.card["training_data"]
    return list(data["patients"]), list(data["val_patients"])


def segmenter_for(state_dict, info):
    from napari_lggseg import models
    from napari_lggseg.inference import Segmenter
    from napari_lggseg.model_cards import card_postprocessing
    from napari_lggseg.preprocess import Recipe
    from napari_lggseg.unet import load_state_dict_strict

    net = models.build_model(info.card)
    load_state_dict_strict(net, state_dict, info.name)
    seg = Segmenter(net, Recipe.from_dict(info.card["preprocessing"]), "cpu", name=info.name)
    seg.default_postprocess = card_postprocessing(info.card).method
    return seg


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--institution", default="HT", choices=["HT", "CS"])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--ks", default="1,2,3")
    ap.add_argument(
        "--slices", type=int, default=8, help="slices per volume in the 'uncertain' arm"
    )
    ap.add_argument(
        "--base-steps",
        type=int,
        default=3000,
        help="base model budget in steps of 16 slices (~40 min on 2 idle cores)",
    )
    ap.add_argument("--base-minutes", type=float, default=60, help="clock cap on the base model")
    ap.add_argument("--base-dir", type=Path, default=HERE.parent / "runs" / "hitl-store")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run, not a result")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report (figures go to figures/ beside it); default training/HITL.md, with --quick "
        "runs/hitl-quick/HITL.md so that a smoke run never replaces the real result",
    )
    args = ap.parse_args()
    if args.out is None:
        args.out = (
            HERE.parent / "runs" / "hitl-quick" / "HITL.md" if args.quick else HERE / "HITL.md"
        )
    if args.quick:
        args.draws, args.ks, args.base_steps, args.base_minutes = (
            2,
            "1",
            40,
            min(args.base_minutes, 1.0),
        )
    torch.set_num_threads(args.threads)
    os.environ["LGGSEG_MODEL_DIR"] = str(args.base_dir)

    from napari_lggseg import lgg_io, models
    from napari_lggseg.finetune import fine_tune, fine_tune_config, model_card
    from napari_lggseg.preprocess import Recipe
    from napari_lggseg.train_data import TrainVolume, split_patients
    from napari_lggseg.training import TrainConfig, train
    from napari_lggseg.uncertainty import slices_to_review
    from napari_lggseg.unet import UNet

    ks = [int(k) for k in args.ks.split(",")]
    folders = lgg_io.list_patients(args.data)
    site = [f for f in folders if lgg_io.institution_of(f.name) == args.institution]
    rest = [f for f in folders if lgg_io.institution_of(f.name) != args.institution]
    if args.quick:
        site, rest = site[:5], rest[:8]
    t_all = time.time()

    # 1. base model on the other institutions
    base_name = f"hitl-base-no{args.institution}" + ("-quick" if args.quick else "")
    if not any(i.name == base_name for i in models.list_models()):
        train_ids, val_ids = split_patients([f.name for f in rest], 0.1, args.seed)
        vols = {f.name: read_volume(f) for f in rest}
        recipe = Recipe()
        per_epoch = 150 if not args.quick else 10
        cfg = TrainConfig(
            epochs=max(1, args.base_steps // per_epoch),
            minutes=args.base_minutes,
            steps_per_epoch=per_epoch,
            lr=2e-3,
            warmup_steps=100 if not args.quick else 5,
            seed=args.seed,
            device="cpu",
        )
        net = UNet(recipe.in_channels, 1, 16)
        res = train(net, recipe, [vols[i] for i in train_ids], [vols[i] for i in val_ids], cfg)
        models.save_model(
            res.state_dict,
            model_card(
                recipe,
                16,
                res,
                cfg,
                None,
                intended_use=f"HITL simulation base without {args.institution}",
            ),
            base_name,
        )
        del vols
    base_info = models.get_model(base_name)
    base_seg = segmenter_for(models.load_state_dict(base_info), base_info)
    train_ids, val_ids = base_split(base_info)

    site_vols = {f.name: read_volume(f) for f in site}
    before = evaluate(base_seg, site_vols.values())
    # forgetting check: the base model's own validation patients (other institutions)
    other_vols = [read_volume(args.data / i) for i in val_ids]
    other_before = float(np.mean(list(evaluate(base_seg, other_vols).values())))
    rng = np.random.default_rng(args.seed)
    budget = fine_tune_config(1)
    rows = []
    for d in range(args.draws):
        order = list(rng.permutation(sorted(site_vols)))
        corrected, held = order[: max(ks)], order[max(ks) :]
        controls = list(rng.permutation(sorted(train_ids))[: max(ks)])
        held_vols = [site_vols[i] for i in held]
        b = float(np.mean([before[i] for i in held]))
        for k in ks:
            arms = {
                "whole": [site_vols[i] for i in corrected[:k]],
                "control": [read_volume(args.data / i) for i in controls[:k]],
            }
            uncertain = []
            for i in corrected[:k]:
                v = site_vols[i]
                prob = base_seg.probabilities(v.image)[0]
                lab = np.zeros(v.mask.shape[0], bool)
                picks = [z for z, _ in slices_to_review(prob, n=args.slices, min_score=0.0)]
                lab[picks] = True
                uncertain.append(TrainVolume(v.patient_id, v.image, v.mask, lab, "corrections"))
            arms["uncertain"] = uncertain
            for arm, vols in arms.items():
                cfg = fine_tune_config(len(vols))
                cfg.minutes = (
                    None  # the round's 30 steps exactly: a busy machine must not change the result
                )
                t0 = time.perf_counter()
                # as the widget with no other ground truth open: validated on the corrected slices,
                # keeping the best epoch (the base weights if no epoch beats them)
                _, res = fine_tune(base_name, vols, vols, config=cfg, save=False)
                secs = time.perf_counter() - t0
                tuned = segmenter_for(res.state_dict, base_info)
                after = evaluate(tuned, held_vols)
                a = float(np.mean(list(after.values())))
                other = float(np.mean(list(evaluate(tuned, other_vols).values())))
                rows.append(
                    {
                        "draw": d,
                        "k": k,
                        "arm": arm,
                        "before": b,
                        "after": a,
                        "delta": a - b,
                        "other_before": other_before,
                        "other_after": other,
                        "seconds": secs,
                        "steps": res.steps,
                        "best_epoch": res.best_epoch,
                        "corrected": corrected[:k] if arm != "control" else controls[:k],
                        "held_out": held,
                        "per_patient_after": after,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)

    write_report(args, rows, before, base_info, budget, time.time() - t_all)


def write_report(args, rows, before, base_info, budget, wall) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir = args.out.parent / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    arms = ["whole", "uncertain", "control"]
    ks = sorted({r["k"] for r in rows})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    lines = [
        f"# Human in the loop: correcting k volumes of a new institution ({args.institution})",
        "",
        f"Generated by `python training/simulate_hitl.py --institution {args.institution} --draws {args.draws} "
        f"--ks {args.ks}{' --quick' if args.quick else ''}` in {wall / 60:.1f} min on {torch.get_num_threads()} CPU threads."
        + (" **Quick smoke run: tiny budgets, not a result.**" if args.quick else ""),
        "",
        f"Base model `{base_info.name}`: trained without {args.institution} "
        f"({base_info.card['training']['steps']} steps, validation Dice {base_info.card['metrics']['val_mean_dice']:.3f} "
        "on its own institutions). "
        f"Before fine-tuning, its mean Dice on all {len(before)} {args.institution} patients: {np.mean(list(before.values())):.3f}.",
        "",
        f"Fine-tuning budget (the Fine-tune widget's default round): {budget.epochs} epochs × "
        f"{budget.steps_per_epoch} steps, batch {budget.batch_size}, lr {budget.lr}. The widget also caps a round "
        f"at {budget.minutes} min so that a slow machine ends it with fewer steps; the simulation lifts the cap "
        "so that every round makes exactly its steps (seconds below are measured, on a machine that was not idle). "
        "As in the widget when no other patient's ground truth is open, a round is validated on the corrected "
        "slices after each epoch and keeps its best epoch (the base weights if none beats them).",
        "",
        "Mean per-volume Dice change on the held-out patients of the institution (after − before, paired per "
        "draw), mean ± standard deviation over draws, and seconds per fine-tuning round:",
        "",
        "| arm | k | Δ Dice (held-out site) | before → after | Δ Dice other sites | seconds | steps | draws |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        means, sds = [], []
        for k in ks:
            sel = [r for r in rows if r["arm"] == arm and r["k"] == k]
            dl = np.array([r["delta"] for r in sel])
            means.append(dl.mean())
            sds.append(dl.std(ddof=1) if len(dl) > 1 else 0.0)
            lines.append(
                f"| {arm} | {k} | {dl.mean():+.3f} ± {sds[-1]:.3f} | "
                f"{np.mean([r['before'] for r in sel]):.3f} → {np.mean([r['after'] for r in sel]):.3f} | "
                f"{np.mean([r['other_after'] - r['other_before'] for r in sel]):+.3f} | "
                f"{np.mean([r['seconds'] for r in sel]):.0f} | {np.mean([r['steps'] for r in sel]):.0f} | "
                f"{len(sel)} |"
            )
        ax.errorbar(
            np.array(ks) + 0.05 * arms.index(arm), means, yerr=sds, marker="o", capsize=3, label=arm
        )
    k_max = max(ks)
    sel = [r for r in rows if r["arm"] == "whole" and r["k"] == k_max]
    gain, secs = np.mean([r["delta"] for r in sel]), np.mean([r["seconds"] for r in sel])
    lines += [
        "",
        f"Target: {k_max} corrected volumes lift the held-out patients' mean Dice by ≥ 0.05 in ≤ 180 s of "
        f"fine-tuning. Measured: {gain:+.3f} in {secs:.0f} s: **{'met' if gain >= 0.05 and secs <= 180 else 'not met'}**.",
    ]
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("corrected volumes k")
    ax.set_ylabel("Δ mean Dice on held-out patients")
    ax.set_xticks(ks)
    ax.legend()
    fig.tight_layout()
    fig.savefig(fig_dir / "hitl.png", dpi=100)
    lines += [
        "",
        "![paired Dice change](figures/hitl.png)",
        "",
        "Arms: `whole` = every slice of the k corrected volumes; `uncertain` = only the "
        f"{args.slices} slices per volume that the review list ranks first; `control` = k volumes from the "
        "base model's own institutions (separates new-site gains from more training). "
        "'Δ Dice other sites' is the change on the base model's own validation patients (other "
        "institutions): what fine-tuning costs elsewhere.",
        "",
        "How the round's learning rate was chosen (on forgetting, with the same base): [ROUNDS.md](ROUNDS.md).",
        "",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    (fig_dir / "hitl_rows.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
