"""Train a shipped model from ../shared/lgg/kaggle_3m alone, through the package's training engine.

Reproducible: the splits are training/splits.json, the seed and every hyper-parameter are
arguments recorded in the model card, the budget is wall-clock minutes (the cosine schedule
follows the clock, so a slower machine makes fewer steps of the same shape). A later run can
continue from committed weights with ``--continue-from NAME`` (fresh optimizer; the card
records the lineage).

The default recipe (see training/REPORT.md for why):

    nohup python training/train_shipped.py --name lgg-fast-w16 --minutes 85 > runs/lgg-fast-w16.log &

Validation Dice (10 patients) picks the checkpoint; the test split is not read here.

Site shifts (issue 17): ``--shift-copies N`` adds N copies of every training volume with a
random mix of site differences (``napari_lggseg.site_shift.random_site_shift``: skull stripping,
thin slices, coarser in-plane resolution, bias field, gamma, noise, raw integers / 0-255 /
z-scored storage), so with N=1 half the sampled slices are shifted. ``--val-shift-copies M`` adds
M shifted copies of each validation patient (another seed) to the validation set that picks the
checkpoint, so the choice weighs clean and shifted scans alike. The shipped default
``lgg-multisite`` (training/SITE_SHIFT.md) is ``lgg-fast`` continued twice this way::

    python training/train_shipped.py --name lgg-site-long --continue-from lgg-fast \
        --recipe robust-zscore --shift-copies 1 --val-shift-copies 1 --epochs 12 \
        --steps-per-epoch 50 --val-every 2 --lr 0.0005 --warmup-steps 30 --batch-size 16 \
        --substitute 0.4 --seed 0 --threads 1 --device cpu --role none --out-root runs/models
    python training/train_shipped.py --name lgg-site-long2 \
        --continue-from training/continued/lgg-site-long --recipe robust-zscore \
        --shift-copies 1 --val-shift-copies 1 --epochs 36 --steps-per-epoch 50 --val-every 4 \
        --minutes 95 --lr 0.0003 --warmup-steps 30 --batch-size 16 --substitute 0.4 --seed 1 \
        --threads 1 --device cpu --role none --out-root runs/models

(the first one's weights are committed in training/continued/lgg-site-long/).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_lggseg import models, site_shift
from napari_lggseg.preprocess import Recipe
from napari_lggseg.unet import UNet, load_state_dict_strict

try:
    from napari_lggseg.finetune import model_card
    from napari_lggseg.train_data import TrainVolume, load_volumes
    from napari_lggseg.training import TrainConfig, train
except ImportError:  # the package before the training module was split (a pinned snapshot)
    from napari_lggseg.training import TrainConfig, TrainVolume, load_volumes, model_card, train

HERE = Path(__file__).parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "lgg" / "kaggle_3m"


def shifted_copies(volumes, copies: int, seed: int, max_slices: bool) -> list:
    """``copies`` site-shifted copies of each volume (float16 images to halve their memory)."""
    out = []
    for k in range(copies):
        for i, v in enumerate(volumes):
            rng = np.random.default_rng([seed, k, i])
            cap = v.image.shape[0] if max_slices else None
            image, mask, applied = site_shift.random_site_shift(v.image, v.mask, rng, cap)
            pid = f"{v.patient_id} (site shift {k + 1}: {', '.join(applied) or 'none'})"
            out.append(TrainVolume(pid, image.astype(np.float16), mask))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--name", required=True)
    ap.add_argument("--minutes", type=float, default=85)
    ap.add_argument(
        "--deadline",
        default=None,
        help="HH:MM local time: on a shared machine, cut the minutes so training ends by then "
        "(the card records the steps actually made)",
    )
    ap.add_argument("--epochs", type=int, default=None, help="step budget = epochs x steps/epoch")
    ap.add_argument("--val-every", type=int, default=1)
    ap.add_argument("--warmup-steps", type=int, default=100)
    ap.add_argument("--recipe", default="crop-zscore", help="preprocessing recipe name")
    ap.add_argument("--shift-copies", type=int, default=0, help="site-shifted copies per volume")
    ap.add_argument("--val-shift-copies", type=int, default=0)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--context", type=int, default=1)
    ap.add_argument("--channels", default="pre-contrast,FLAIR,post-contrast")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--loss", default="dice+bce")
    ap.add_argument("--substitute", type=float, default=0.4)
    ap.add_argument("--steps-per-epoch", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--continue-from", default=None, help="a shipped/user model to continue from")
    ap.add_argument(
        "--role", default="default", choices=["default", "accurate", "other-sites", "none"]
    )
    ap.add_argument("--out-root", type=Path, default=models.SHIPPED_DIR)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    splits = json.loads((HERE / "splits.json").read_text())
    recipe = Recipe(
        name=args.recipe,
        size=args.size,
        context=args.context,
        channels=tuple(args.channels.split(",")),
    )
    t0 = time.time()
    train_vols = load_volumes([args.data], patients=set(splits["train"]))
    val_vols = load_volumes([args.data], patients=set(splits["validation"]))
    if args.shift_copies:
        train_vols += shifted_copies(train_vols, args.shift_copies, args.seed, max_slices=True)
    if args.val_shift_copies:
        val_vols += shifted_copies(val_vols, args.val_shift_copies, 10_000 + args.seed, False)
    print(
        f"loaded {len(train_vols)} train / {len(val_vols)} validation volumes in {time.time() - t0:.1f} s",
        flush=True,
    )

    minutes = args.minutes
    if args.deadline:
        hh, mm = (int(v) for v in args.deadline.split(":"))
        now = time.localtime()
        left = (hh * 60 + mm) - (now.tm_hour * 60 + now.tm_min + now.tm_sec / 60)
        minutes = max(1.0, min(minutes, left))
        print(f"deadline {args.deadline}: {minutes:.1f} min of training", flush=True)
    model = UNet(recipe.in_channels, 1, args.width)
    parent = None
    if args.continue_from:
        base, info = models.load_model(args.continue_from)
        load_state_dict_strict(model, base.state_dict(), args.continue_from)
        parent = info.name
    cfg = TrainConfig(
        epochs=args.epochs,
        minutes=minutes,
        val_every=args.val_every,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        lr=args.lr,
        loss=args.loss,
        substitute=args.substitute,
        seed=args.seed,
        device=args.device,
        warmup_steps=args.warmup_steps,
    )

    def progress(ev):
        if ev["kind"] == "epoch":
            print(json.dumps(ev), flush=True)

    runs = HERE.parent / "runs"
    result = train(
        model,
        recipe,
        train_vols,
        val_vols,
        cfg,
        progress=progress,
        checkpoint=runs / f"{args.name}.ckpt.safetensors",
    )
    print(
        f"stopped: {result.stopped}; best epoch {result.best_epoch} val Dice {result.best_val_dice:.4f}; "
        f"{result.steps} steps in {result.seconds / 60:.1f} min",
        flush=True,
    )
    card = model_card(
        recipe,
        args.width,
        result,
        cfg,
        parent,
        recipe_command="python training/train_shipped.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if v is not None and k not in ("data", "out_root")
        ),
        hardware=f"{torch.get_num_threads()} CPU threads, device {cfg.device}",
        splits="training/splits.json",
    )
    if args.role != "none":
        card["role"] = args.role
        card["default"] = args.role == "default"
    info = models.save_model(result.state_dict, card, args.name, root=args.out_root, half=True)
    print(f"saved {info.path}", flush=True)


if __name__ == "__main__":
    main()
