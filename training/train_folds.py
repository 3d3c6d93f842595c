"""Fold models for the radiogenomics report: automatic masks for the shipped model's own
training patients, from models that never saw them.

``training/radiogenomics.py`` measures shape features on automatic masks, and no patient's mask
may come from a model that trained on it. The shipped model (``lgg-fast``) trained on the
``train`` split of training/splits.json, so its masks serve only the other patients. For the
train split this script makes K fold models (default 2) with the shipped recipe
(training/train_shipped.py: width 16, 128 px, one context slice, pre/FLAIR/post, dice+bce,
lr 2e-3, batch 16, 40% FLAIR substitution, seed 0) on a cheaper, STEP budget (epochs x 150 steps,
not minutes, so a busy machine makes the same model, only later):

- the train split is cut into K folds, stratified by institution (sorted ids dealt in turn);
- fold k trains on every patient of the root except fold k's and except the validation split,
  and validates on the validation split (10 patients) to choose its checkpoint. The validation
  patients are left out of training so that the validation Dice in the card means something;
  they get their automatic masks from the shipped model, which did not train on them either.

Writes ``training/folds/folds.json`` (the fold of each patient) and one model folder per fold
(``training/folds/lgg-fold<k>/``: fp16 safetensors + card). Resumes from its checkpoints in
``runs/`` when restarted. Run it in the background, gently:

    nice -n 10 python training/train_folds.py --epochs 4 --val-every 4 > runs/folds.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from napari_lggseg import lgg_io, models
from napari_lggseg.preprocess import Recipe
from napari_lggseg.training import TrainConfig, train
from napari_lggseg.unet import UNet

try:
    from napari_lggseg.finetune import model_card
    from napari_lggseg.train_data import load_volumes
except ImportError:  # the package before training.py was split (the folds were trained on it)
    from napari_lggseg.training import load_volumes, model_card

HERE = Path(__file__).parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "lgg" / "kaggle_3m"
FOLDS_DIR = HERE / "folds"


def make_folds(patients: list[str], k: int) -> list[list[str]]:
    """K folds of ``patients``, stratified by institution: sorted ids dealt out in turn."""
    by_site: dict[str, list[str]] = defaultdict(list)
    for p in sorted(patients):
        by_site[lgg_io.institution_of(p)].append(p)
    folds: list[list[str]] = [[] for _ in range(k)]
    turn = 0
    for site in sorted(by_site):
        for p in by_site[site]:
            folds[turn % k].append(p)
            turn += 1
    return [sorted(f) for f in folds]


def train_fold(args, fold: int, held_out: set[str], validation: set[str]) -> None:
    name = f"lgg-fold{fold}"
    if (FOLDS_DIR / name).exists():
        print(f"{name}: already trained, skipped", flush=True)
        return
    recipe = Recipe(size=128, context=1, channels=("pre-contrast", "FLAIR", "post-contrast"))
    every = {p.name for p in lgg_io.list_patients(args.data)}
    train_ids = every - held_out - validation
    train_vols = load_volumes([args.data], patients=train_ids)
    val_vols = load_volumes([args.data], patients=validation)
    print(f"{name}: {len(train_vols)} train / {len(val_vols)} validation volumes", flush=True)
    cfg = TrainConfig(
        epochs=args.epochs,
        steps_per_epoch=150,
        batch_size=16,
        lr=2e-3,
        loss="dice+bce",
        substitute=0.4,
        seed=0,
        device="cpu",
        warmup_steps=100,
        val_every=args.val_every,
    )
    ckpt = HERE.parent / "runs" / f"{name}.ckpt.safetensors"

    def progress(ev):
        if ev["kind"] == "epoch":
            print(name, json.dumps(ev), flush=True)

    result = train(
        UNet(recipe.in_channels, 1, 16),
        recipe,
        train_vols,
        val_vols,
        cfg,
        progress=progress,
        checkpoint=ckpt,
        resume=ckpt if ckpt.exists() else None,
    )
    print(
        f"{name}: best val Dice {result.best_val_dice:.4f} after {result.steps} steps", flush=True
    )
    card = model_card(
        recipe,
        16,
        result,
        cfg,
        None,
        recipe_command=f"python training/train_folds.py --folds {args.folds} --epochs {args.epochs} "
        f"--val-every {args.val_every}",
        hardware=f"{torch.get_num_threads()} CPU thread(s)",
        splits="training/splits.json + training/folds/folds.json",
    )
    card["role"] = "none"
    card["default"] = False
    card["fold"] = {"index": fold, "held_out": sorted(held_out)}
    card["intended_use"] = "radiogenomics report only (training/radiogenomics.py)"
    models.save_model(result.state_dict, card, name, root=FOLDS_DIR, half=True)
    print(f"saved {FOLDS_DIR / name}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4, help="of 150 steps each")
    ap.add_argument(
        "--val-every", type=int, default=4, help="validate every N epochs (and at the end)"
    )
    ap.add_argument("--only", type=int, default=None, help="train this fold only")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    splits = json.loads((HERE / "splits.json").read_text())
    folds = make_folds(splits["train"], args.folds)
    FOLDS_DIR.mkdir(exist_ok=True)
    table = {"k": args.folds, "of": "train split of training/splits.json", "folds": folds}
    (FOLDS_DIR / "folds.json").write_text(json.dumps(table, indent=2) + "\n")
    t0 = time.time()
    for k, held_out in enumerate(folds):
        if args.only is None or args.only == k:
            train_fold(args, k, set(held_out), set(splits["validation"]))
    print(f"done in {(time.time() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
