"""``lggseg train``: train a new model or fine-tune one on masks and corrections.

Fine-tuning (``--from``) goes through :func:`napari_lggseg.finetune.fine_tune`, the path the
Fine-tune widget takes. Several processes (DDP; only rank 0 prints and saves)::

    torchrun --nproc_per_node=N -m napari_lggseg.cli train --data DIR ... --name NEW
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from ._common import PROG, CLIError, ProgressBar, fmt, patient_ids


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a new model or fine-tune one on masks and corrections",
        description="Train or fine-tune on patient folders with masks, corrections folders, "
        "scan cases (NIfTI, DICOM) with a label file, folders of saved scan masks, or roots of "
        "any of these (a label file counts every slice; corrections only their reviewed ones). Runs under torchrun too (only rank 0 saves). Ctrl-C "
        "stops between steps and saves the best model so far (a new model that has not "
        "finished an epoch yet is not saved).",
    )
    p.add_argument("--data", nargs="+", required=True, metavar="PATH")
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
    budget.add_argument(
        "--epochs", type=int, help="number of epochs (default 10; with --from, one round)"
    )
    budget.add_argument(
        "--minutes",
        type=float,
        help="wall-clock budget instead of epochs (with --from: the round's, its other settings kept)",
    )
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
        help="peak learning rate (default 1e-3; with --from, the fine-tuning round's)",
    )
    p.set_defaults(run=run)


def run(args) -> int:
    import torch

    from .. import finetune, models, train_data, training
    from ..checkpoint import CheckpointError, check_writable
    from ..devices import resolve_device
    from ..distributed import rank_and_world
    from ..preprocess import Recipe

    resolve_device(args.device, fallback=False)  # a clear error before minutes of loading
    for p in args.data:
        if not Path(p).exists():
            raise CLIError(f"{p}: no such {'file' if Path(p).suffix else 'folder'}")
    if args.resume and not Path(args.resume).is_file():
        raise CLIError(f"{args.resume}: no such checkpoint file")
    try:
        if args.checkpoint:
            check_writable(args.checkpoint)
    except CheckpointError as exc:
        raise CLIError(str(exc)) from exc
    rank, world = rank_and_world()
    say = print if rank == 0 else (lambda *a, **k: None)
    parent = models.get_model(args.from_model) if args.from_model else None
    name = models.check_name(
        args.name or f"{parent.name if parent else 'lgg'}-ft-{datetime.now():%Y%m%d-%H%M}"
    )
    train_vols, val_vols = _volumes(args, say, parent is not None, train_data)
    width = parent.card["architecture"]["width"] if parent else args.width
    val_ids = sorted({v.patient_id for v in val_vols})
    say(
        f"{'fine-tuning ' + parent.name if parent else f'training a new U-Net (width {width})'} "
        f"on {len({v.patient_id for v in train_vols})} patient(s), validating on {len(val_ids)}"
        + (f" ({', '.join(val_ids)})" if 0 < len(val_ids) <= 5 else "")
        + (f"; {world} processes" if world > 1 else "")
    )
    cfg = _config(args, fine_tuning=parent is not None, n_volumes=len(train_vols))
    command = shlex.join([PROG, *getattr(args, "argv", [])])
    printer, result = _EpochPrinter(say), None
    run_kw = dict(progress=printer, checkpoint=args.checkpoint, resume=args.resume)
    try:
        with _ctrl_c(printer, learned=parent is not None or bool(args.resume)) as cancel:
            if parent:
                info, result = finetune.fine_tune(
                    parent.name, train_vols, val_vols, cfg, name=name, cancel=cancel,
                    keep_if_cancelled=True, card_extra={"command": command}, **run_kw,
                )  # fmt: skip
                return _report(say, result, val_vols, info)
            recipe = Recipe()
            model = training.new_model(recipe, width, args.seed)
            result = training.train(
                model, recipe, train_vols, val_vols, cfg, cancel=cancel, **run_kw
            )
        if result.epochs_done == 0:
            return _report(say, result, val_vols, None, nothing_learned=True)
        card = finetune.model_card(recipe, width, result, cfg, None, command=command)
        info = finetune.save_trained(result.state_dict, card, name)
        return _report(say, result, val_vols, info)
    except finetune.ModelNotStored as exc:
        _report(say, exc.result or result, val_vols, None)
        raise
    except CheckpointError as exc:
        raise CLIError(str(exc)) from exc
    finally:
        printer.bar.close()
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _config(args, fine_tuning: bool, n_volumes: int = 1):
    """The run's budget and hyper-parameters from the flags. With ``--from`` it is the
    fine-tuning round (:func:`finetune.fine_tune_config`, what the widget and a project run):
    ``--minutes`` or ``--epochs`` replace only its budget (an epoch is then one pass over the
    labelled slices), ``--lr``, ``--batch-size`` and ``--loss`` only what they name."""
    from ..finetune import fine_tune_config
    from ..training import TrainConfig

    if not fine_tuning:
        return TrainConfig(
            epochs=args.epochs,
            minutes=args.minutes,
            batch_size=args.batch_size,
            lr=args.lr if args.lr is not None else TrainConfig.lr,
            loss=args.loss,
            seed=args.seed,
            device=args.device,
        )
    cfg = fine_tune_config(n_volumes, device=args.device, seed=args.seed, minutes=args.minutes)
    if args.epochs:
        cfg.epochs, cfg.minutes = args.epochs, None
    if args.epochs or args.minutes:
        cfg.steps_per_epoch = None
    cfg.batch_size, cfg.loss = args.batch_size, args.loss
    cfg.lr = args.lr if args.lr is not None else cfg.lr
    return cfg


def _volumes(args, say, fine_tuning: bool, train_data):
    """``(train, validation)`` volumes: the patient-level split (a fine-tuning run on a single
    patient validates on none); volumes without a labelled slice are named and left out."""
    volumes = train_data.load_volumes(
        args.data, patients=set(ids) if (ids := patient_ids(args.patients)) else None
    )
    if not volumes:
        raise CLIError(f"no volumes with masks to learn from in {', '.join(args.data)}")
    empty = train_data.unlabelled(volumes)
    for v in empty:
        say(f"{v.folder or v.patient_id}: {v.why_unlabelled}, left out")
    volumes = [v for v in volumes if not any(v is e for e in empty)]
    pids = sorted({v.patient_id for v in volumes})
    if fine_tuning and len(pids) < 2:
        train_ids, val_ids = pids, []
    else:
        train_ids, val_ids = train_data.split_patients(pids, args.val_fraction, args.seed)
    return (
        [v for v in volumes if v.patient_id in set(train_ids)],
        [v for v in volumes if v.patient_id in set(val_ids)],
    )


class _EpochPrinter:
    """The progress callback: a bar during an epoch, one line after each."""

    def __init__(self, say):
        self.say, self.bar, self.epochs_seen = say, ProgressBar("training"), 0

    def __call__(self, ev: dict) -> None:
        if ev["kind"] == "step":
            total = ev.get("total_steps")
            done = ev["step"] if total else int(round(100 * ev.get("fraction", 0.0)))
            self.bar.update(done, total or 100, f"epoch {ev['epoch']} loss {ev['loss']:.4f}")
            return
        self.bar.close()
        self.epochs_seen += ev["epoch"] > 0
        v, loss, best = ev.get("val_dice"), ev.get("loss"), ev.get("best_val_dice")
        dice = (
            f"validation Dice {v:.4f}"
            if v is not None
            else "not validated"
            if best is not None
            else "no validation"
        )
        self.say(
            f"epoch {ev['epoch']}: "
            + (f"loss {loss:.4f}, " if loss is not None else "before training, ")
            + dice
            + (f" (best {best:.4f})" if best is not None else "")
            + f", {ev.get('seconds', 0):.0f} s",
            flush=True,
        )


@contextmanager
def _ctrl_c(printer: _EpochPrinter, learned: bool):
    """A cancel flag the first Ctrl-C sets (the run stops after the step); a second aborts."""
    cancel = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def on_sigint(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        printer.bar.close()
        keep = (
            "keeping the best model so far"
            if learned or printer.epochs_seen
            else "no epoch has finished, so there is no model to keep: no model will be saved"
        )
        print(
            f"stopping after this step; {keep} (Ctrl-C again to abort)", file=sys.stderr, flush=True
        )

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, old)


def _report(say, result, val_vols, info, nothing_learned: bool = False) -> int:
    """Print how the run ended and where the model went; the exit code."""
    from ..training import StopReason

    why = f" ({result.message})" if result.stopped is not StopReason.FINISHED else ""
    say(f"stopped: {result.stopped}{why}; {result.steps} steps in {result.seconds / 60:.1f} min")
    if nothing_learned:
        say("no epoch finished, so nothing was learned: no model saved")
        return 130 if result.stopped is StopReason.CANCELLED else 1
    if val_vols:
        before = result.history[0].get("val_dice") if result.history else None
        say(
            f"validation Dice before {fmt(before, '.4f')}, after {fmt(result.best_val_dice, '.4f')} "
            f"(best epoch {result.best_epoch})"
        )
    else:
        say(
            "no validation patients: the last weights are kept (give more patients to measure the model)"
        )
    if info is not None:
        say(f"saved model {info.name} in {info.path}")
    return 0
