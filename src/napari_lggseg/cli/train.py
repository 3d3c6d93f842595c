"""``lggseg train``: train a new model or fine-tune one on masks and corrections (torchrun too)."""

from __future__ import annotations

import shlex
import sys
from datetime import datetime
from pathlib import Path

from ._common import PROG, CLIError, ProgressBar, fmt, patient_ids


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a new model or fine-tune one on masks and corrections",
        description="Train or fine-tune on patient folders with masks, corrections folders, "
        "or roots of patient folders. Runs under torchrun too (only rank 0 saves). Ctrl-C "
        "stops between steps and saves the best model so far.",
    )
    p.add_argument("--data", nargs="+", required=True, metavar="DIR")
    p.add_argument(
        "--patients",
        nargs="+",
        metavar="ID",
        help="only these patients (ids, list.json or FILE.json:KEY)",
    )
    p.add_argument(
        "--from", dest="from_model", metavar="MODEL", help="fine-tune this model (keeps its recipe)"
    )
    p.add_argument("--name", help="name of the new model (default: <parent or lgg>-ft-<date-time>)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, help="number of epochs (default 10)")
    budget.add_argument("--minutes", type=float, help="wall-clock budget instead of epochs")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.15,
        help="patients held out for validation (default 0.15)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] or mps (default: auto)")
    p.add_argument(
        "--resume", metavar="CKPT", help="continue from a checkpoint written by --checkpoint"
    )
    p.add_argument(
        "--checkpoint", metavar="PATH", help="write a resumable checkpoint here after every epoch"
    )
    p.add_argument(
        "--width",
        type=int,
        default=16,
        help="features of the first level for a new model (default 16)",
    )
    p.add_argument("--loss", choices=("dice+bce", "dice", "bce"), default="dice+bce")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default 1e-3; with --from, the fine-tuning round's, 1e-4)",
    )
    p.set_defaults(run=run)


def run(args) -> int:
    import signal
    import threading

    import torch

    from .. import models, training
    from ..devices import resolve_device
    from ..preprocess import Recipe
    from ..unet import UNet

    resolve_device(args.device, fallback=False)  # a clear error before minutes of loading
    for p in args.data:
        if not Path(p).exists():
            raise CLIError(f"{p}: no such folder")
    if args.resume and not Path(args.resume).is_file():
        raise CLIError(f"{args.resume}: no such checkpoint file")
    rank, world = training._dist_info()
    say = print if rank == 0 else (lambda *a, **k: None)

    parent = None
    if args.from_model:
        model, info = models.load_model(args.from_model)
        parent = info.name
        recipe = Recipe.from_dict(info.card["preprocessing"])
        width = int(info.card.get("architecture", {}).get("width", model.width))
    else:
        recipe = Recipe()
        width = args.width
        model = UNet(recipe.in_channels, 1, width)
    name = args.name or f"{parent or 'lgg'}-ft-{datetime.now():%Y%m%d-%H%M}"
    models.check_name(name)

    volumes = training.load_volumes(
        args.data, patients=set(ids) if (ids := patient_ids(args.patients)) else None
    )
    if not volumes:
        raise CLIError(f"no volumes with masks to learn from in {', '.join(args.data)}")
    pids = sorted({v.patient_id for v in volumes})
    if args.from_model and len(pids) < 2:
        train_ids, val_ids = pids, []
    else:
        train_ids, val_ids = training.split_patients(pids, args.val_fraction, args.seed)
    train_vols = [v for v in volumes if v.patient_id in set(train_ids)]
    val_vols = [v for v in volumes if v.patient_id in set(val_ids)]
    say(
        f"{'fine-tuning ' + parent if parent else f'training a new U-Net (width {width})'} on "
        f"{len(train_ids)} patient(s), validating on {len(val_ids)}"
        + (f" ({', '.join(val_ids)})" if 0 < len(val_ids) <= 5 else "")
        + (f"; {world} processes" if world > 1 else "")
    )

    lr = args.lr if args.lr is not None else (training.fine_tune_config().lr if parent else 1e-3)
    cfg = training.TrainConfig(
        epochs=args.epochs,
        minutes=args.minutes,
        batch_size=args.batch_size,
        lr=lr,
        loss=args.loss,
        seed=args.seed,
        device=args.device,
    )
    if cfg.epochs is None and cfg.minutes is None:
        cfg.epochs = 10

    bar = ProgressBar("training")

    def progress(ev: dict) -> None:
        if ev["kind"] == "step":
            total = ev.get("total_steps")
            done = ev["step"] if total else int(round(100 * ev.get("fraction", 0.0)))
            bar.update(done, total or 100, f"epoch {ev['epoch']} loss {ev['loss']:.4f}")
        else:
            bar.close()
            v = ev.get("val_dice")
            loss = ev.get("loss")
            say(
                f"epoch {ev['epoch']}: "
                + (f"loss {loss:.4f}, " if loss is not None else "before training, ")
                + (
                    f"validation Dice {v:.4f}"
                    if v is not None
                    else "not validated"
                    if ev.get("best_val_dice") is not None
                    else "no validation"
                )
                + (
                    f" (best {ev['best_val_dice']:.4f})"
                    if ev.get("best_val_dice") is not None
                    else ""
                )
                + f", {ev.get('seconds', 0):.0f} s",
                flush=True,
            )

    cancel = threading.Event()
    old_handler = None
    if threading.current_thread() is threading.main_thread():

        def on_sigint(signum, frame):
            if cancel.is_set():
                raise KeyboardInterrupt
            cancel.set()
            bar.close()
            print(
                "stopping after this step and keeping the best model so far (Ctrl-C again to abort)",
                file=sys.stderr,
                flush=True,
            )

        old_handler = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = training.train(
            model,
            recipe,
            train_vols,
            val_vols,
            cfg,
            progress=progress,
            cancel=cancel,
            checkpoint=args.checkpoint,
            resume=args.resume,
            fine_tune=bool(parent),
        )
    finally:
        bar.close()
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    try:
        before = result.history[0].get("val_dice") if result.history else None
        after = result.best_val_dice if val_vols else None
        say(f"stopped: {result.stopped}; {result.steps} steps in {result.seconds / 60:.1f} min")
        if val_vols:
            say(
                f"validation Dice before {fmt(before, '.4f')}, after {fmt(after, '.4f')} "
                f"(best epoch {result.best_epoch})"
            )
        else:
            say(
                "no validation patients: the last weights are kept (give more patients to measure the model)"
            )
        if rank == 0:
            card = training.model_card(
                recipe,
                width,
                result,
                cfg,
                parent,
                command=shlex.join([PROG, *getattr(args, "argv", [])]),
            )
            info = models.save_model(result.state_dict, card, models.unique_name(name))
            say(f"saved model {info.name} in {info.path}")
    finally:
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0
