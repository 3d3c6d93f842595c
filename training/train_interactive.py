"""Train the interactive (click correction) model from the automatic one, with simulated clicks.

The network is the base model's U-Net with three more input channels (positive clicks, negative
clicks, current mask) whose first-layer weights start at zero, so training starts from exactly
the base model; then ``napari_lggseg.click_training.train_clicks`` fine-tunes it with iterated
simulated clicks (the standard protocol, ``napari_lggseg.click_sim``) on the training patients
of training/splits.json. The budget is a number of steps (and optionally minutes); the test split
is not read here (benchmarks/bench_clicks.py measures on it). The shipped ``lgg-clicks``: 170
steps from ``lgg-fast`` (session 4, perturb 0 and error weight 0, the defaults then), then the
step-500 snapshot of::

    python training/train_interactive.py --continue-from lgg-clicks --name lgg-clicks-v2 \
        --out-root runs/click_models --steps 4000 --minutes 72 --batch-size 8 --lr 5e-4 \
        --max-clicks 3 --perturb 0.5 --error-weight 4 --snapshot-every 500 --threads 1 --seed 1

chosen on the validation split (``bench_clicks.py --split validation``); ``--continue-from`` took
the session-4 weights (git history, sha256 853bd494...). The schedule follows steps or minutes,
whichever is further along, so a rerun on another machine is close, not bit-identical. Snapshots go to
runs/snapshots/<name>-step<k> every ``--snapshot-every`` steps.

``--synthetic`` trains on synthetic patients instead (a smoke test of the script).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from napari_lggseg import models
from napari_lggseg.click_training import ClickTrainConfig, first_masks, train_clicks
from napari_lggseg.interactive import ClickEncoding, ClickModel, make_interactive
from napari_lggseg.preprocess import Recipe
from napari_lggseg.train_data import TrainVolume, load_volumes, prepare_volumes

HERE = Path(__file__).parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "lgg" / "kaggle_3m"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--base", default="lgg-fast", help="the automatic model to start from")
    ap.add_argument("--name", default="lgg-clicks")
    ap.add_argument("--out-root", type=Path, default=models.SHIPPED_DIR)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--max-clicks", type=int, default=3)
    ap.add_argument("--perturb", type=float, default=ClickTrainConfig.perturb)
    ap.add_argument("--error-weight", type=float, default=ClickTrainConfig.error_weight)
    ap.add_argument(
        "--continue-from", default=None, help="an interactive model (name or folder) to go on from"
    )
    ap.add_argument("--window", type=int, default=ClickEncoding.window)
    ap.add_argument("--sigma-px", type=float, default=ClickEncoding.sigma_px)
    ap.add_argument("--sigma-slices", type=float, default=ClickEncoding.sigma_slices)
    ap.add_argument(
        "--fold-models",
        nargs="*",
        help="first masks from these fold models, each patient by one "
        "that did not train on it (default: the base model's masks)",
    )
    ap.add_argument("--snapshot-every", type=int, default=500, help="steps between snapshots")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic", action="store_true", help="synthetic patients (smoke test)")
    return ap.parse_args(argv)


def training_volumes(args) -> list[TrainVolume]:
    if args.synthetic:
        from napari_lggseg.synthetic import make_synthetic_patient

        return [
            TrainVolume(f"SYNTH_{s}", *make_synthetic_patient(seed=s, n_slices=16, size=128))
            for s in range(1, 5)
        ]
    splits = json.loads((HERE / "splits.json").read_text())
    return load_volumes([args.data / p for p in splits["train"]])


def held_out_masks(folders: list[str], data) -> tuple[list, str]:
    """Each volume's first mask from a fold model that did not train on it: the errors a model
    makes on patients it never saw, which the automatic model's masks of its own training
    patients lack (it fits them too well to leave clicks much to fix)."""
    folds = [models.load_model(f) for f in folders]
    masks = []
    for d in data:
        unseen = [n for n, i in folds if d.patient_id not in i.card["training_data"]["patients"]]
        if not unseen:
            raise SystemExit(f"{d.patient_id}: every fold model trained on it")
        masks += first_masks(unseen[0], [d])
    names = ", ".join(i.name for _, i in folds)
    return masks, f"held out: each patient by the fold model ({names}) that did not train on it"


def fresh_card(card: dict, **fields) -> dict:
    """The card with ``fields`` for a new model folder, without the start model's creation
    date, hash and name (``models.save_model`` would keep its date)."""
    stale = ("created", "sha256", "name")
    return {k: v for k, v in {**card, **fields}.items() if k not in stale}


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.continue_from:  # its click encoding and first step; a fresh optimiser
        start = ClickModel.from_store(args.continue_from)
        net, card, enc = start.net, dict(start.card, parent=start.name), start.encoding
        base_net, base = models.load_model(start.first_step)
    else:
        base_net, base = models.load_model(args.base)
        enc = ClickEncoding(args.sigma_px, args.sigma_slices, args.window)
        net, card = make_interactive(base_net, dict(base.card, name=base.name), enc)
    recipe = Recipe.from_dict(card["preprocessing"])
    volumes = training_volumes(args)
    data = prepare_volumes(volumes, recipe)
    if args.fold_models:
        masks, source = held_out_masks(args.fold_models, data)
    else:
        masks, source = first_masks(base_net, data), f"{base.name} on the same slices"
    print(f"{len(data)} volumes prepared; first masks from {source}", flush=True)
    cfg = ClickTrainConfig(
        steps=args.steps,
        minutes=args.minutes,
        batch_size=args.batch_size,
        lr=args.lr,
        max_clicks=args.max_clicks,
        perturb=args.perturb,
        error_weight=args.error_weight,
        seed=args.seed,
    )

    def snapshot(step: int) -> None:  # runs/snapshots/<name>-step<k>: the weights so far
        models.save_model(
            net.state_dict(),
            fresh_card(card, training={"steps": step, "snapshot_of": args.name}),
            f"{args.name}-step{step}",
            HERE.parent / "runs" / "snapshots",
            half=True,
        )

    result = train_clicks(
        net,
        recipe,
        enc,
        data,
        masks,
        cfg,
        log=lambda s: print(s, flush=True),
        snapshot=snapshot,
        snapshot_every=args.snapshot_every,
    )
    card = fresh_card(
        card,
        training_data={
            "patients": sorted(v.patient_id for v in volumes),
            "volumes": len(volumes),
            "first_masks": source,
        },
        hyperparameters=dict(
            cfg.to_dict(),
            loss="dice + error-weighted bce" if cfg.error_weight > 0 else "dice+bce",
            batchnorm="frozen",
        ),
        training=dict(result, torch=torch.__version__),
        metrics={},
        history=result.pop("history"),
        recipe_command="python training/train_interactive.py " + " ".join(sys.argv[1:]),
        hardware=f"{torch.get_num_threads()} CPU threads",
        intended_use="click correction of an automatic LGG mask (napari_lggseg.interactive); "
        "not an automatic model, not for diagnosis",
        splits="training/splits.json",
    )
    info = models.save_model(net.state_dict(), card, args.name, root=args.out_root, half=True)
    print(
        f"saved {info.path} after {result['steps']} steps in {result['seconds']:.0f} s", flush=True
    )


if __name__ == "__main__":
    main()
