"""``lggseg``: segment, evaluate, train and manage models from a terminal.

    lggseg segment PATIENT_DIR|KAGGLE_ROOT ... --out DIR        predictions as corrections folders + CSV
    lggseg evaluate --data KAGGLE_ROOT --patients training/splits.json:test
    lggseg train --data DIR ... [--from MODEL] --name NEW --minutes 20
    lggseg models [list|rename|delete|export|import|download-reference]

The commands call the same core functions as the napari widgets (inference.Segmenter,
training.train, the model store). Torch is imported inside the commands, so ``--help`` is quick.
A problem with the user's input (a missing folder, an unknown model, a device that is not there)
prints one ``lggseg: error: ...`` line and exits with code 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import sys
from datetime import datetime
from pathlib import Path

PROG = "lggseg"
CSV_COLUMNS = (
    "patient",
    "slices",
    "tumour_voxels",
    "dice",
    "missing_sequences",
    "seconds",
    "model",
    "flagged_slices",
)
PROTOCOL_NOTE = (
    "protocol: per-volume Dice, threshold 0.5, every original slice at its original resolution. "
    "Buda et al.'s reference code scores cropped, resized volumes without their first and last "
    "slice, so its numbers are not directly comparable."
)


class CLIError(Exception):
    """A problem with what the user asked for; printed as one line, exit code 2."""


# --------------------------------------------------------------------------- terminal output


class ProgressBar:
    """A one-line ``\\r`` progress bar on stderr (redrawn only on a terminal)."""

    def __init__(self, label: str = "", width: int = 28, stream=None):
        self.label, self.width = label, width
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._drawn = False

    def update(self, done: int, total: int | None, suffix: str = "") -> None:
        if not self.live:
            return
        if total:
            filled = int(self.width * min(done, total) / total)
            bar = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}"
        else:
            bar = f"{done}"
        self.stream.write(f"\r{self.label} {bar} {suffix}".rstrip() + "\033[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False


def _print_table(rows: list[list[str]], header: list[str], out=None) -> None:
    out = out or sys.stdout
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


def _fmt(v, spec: str = ".3f") -> str:
    return "" if v is None else format(v, spec)


def _write_csv(path: Path, rows: list[dict], columns) -> None:
    """Write the whole table to a temporary file, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in columns})
    os.replace(tmp, path)


# --------------------------------------------------------------------------- inputs


def patient_folders(paths) -> list[Path]:
    """Patient folders named on the command line; a kaggle_3m-style root gives all its patients."""
    from . import lgg_io

    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise CLIError(f"{p}: no such folder")
        if lgg_io.is_patient_folder(p):
            out.append(p)
        elif lgg_io.is_patient_root(p):
            out += lgg_io.list_patients(p)
        else:
            raise CLIError(
                f"{p}: not an LGG patient folder (P/P_<n>.tif slices) or a folder of patient folders"
            )
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def patient_ids(values) -> list[str] | None:
    """``--patients`` values: ids, a JSON file with a list, or ``splits.json:key``."""
    if not values:
        return None
    ids: list[str] = []
    for v in values:
        path, key = v, None
        if ":" in v:
            head, _, tail = v.rpartition(":")
            if head.endswith(".json") and Path(head).is_file():
                path, key = head, tail
        if path.endswith(".json") and Path(path).is_file():
            try:
                data = json.loads(Path(path).read_text())
            except (OSError, ValueError) as exc:
                raise CLIError(f"{path}: cannot read this JSON file ({exc})") from exc
            if key is not None:
                if not isinstance(data, dict) or key not in data:
                    keys = (
                        ", ".join(data) if isinstance(data, dict) else "none: it is not an object"
                    )
                    raise CLIError(f"{path}: has no key {key!r} (keys: {keys})")
                data = data[key]
            if not isinstance(data, list) or not all(isinstance(i, str) for i in data):
                raise CLIError(f"{path}{':' + key if key else ''}: expected a list of patient ids")
            ids += data
        elif path.endswith(".json"):
            raise CLIError(f"{path}: no such JSON file")
        else:
            ids.append(v)
    return ids


def _select(folders: list[Path], ids: list[str] | None, where) -> list[Path]:
    if ids is None:
        return folders
    by_id = {f.name: f for f in folders}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise CLIError(
            f"patient {unknown[0]} not found in {', '.join(map(str, where))}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
        )
    return [by_id[i] for i in dict.fromkeys(ids)]


def _segmenter(args):
    from .inference import Segmenter

    return Segmenter.from_store(
        args.model, device=args.device, batch_size=args.batch_size, tta=args.tta, fallback=False
    )


def _card_postprocess(seg, chosen: str | None) -> str:
    if chosen:
        return chosen
    from . import models

    return models.get_model(seg.name).card.get("postprocessing", {}).get("method") or "min-size"


# --------------------------------------------------------------------------- segment


def cmd_segment(args) -> int:
    from . import lgg_io, metrics
    from .uncertainty import slices_to_review

    folders = patient_folders(args.inputs)
    if not folders:
        raise CLIError(f"no patient folders in {', '.join(args.inputs)}")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"{out_dir}: exists and is not a folder")
    seg = _segmenter(args)
    post = _card_postprocess(seg, args.postprocess)
    print(
        f"{len(folders)} patient(s), model {seg.name} on {seg.device}, threshold {args.threshold}, "
        f"post-processing {post}{', test-time flips' if args.tta else ''}",
        file=sys.stderr,
    )
    rows: list[dict] = []
    failed: list[str] = []
    csv_path = out_dir / "segmentation.csv"
    for k, folder in enumerate(folders, 1):
        try:
            patient = lgg_io.read_patient(folder)
        except lgg_io.LGGFormatError as exc:  # one broken folder does not stop a batch
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            failed.append(folder.name)
            continue
        bar = ProgressBar(f"[{k}/{len(folders)}] {patient.patient_id}")
        try:
            result = seg.segment(patient.image, args.threshold, post, progress=bar.update)
        finally:
            bar.close()
        flagged = slices_to_review(result.prob)  # the list the Segment tumour widget shows
        # the sidecar counts slices from 0 like its reviewed_slices; the CSV gives the numbers in the
        # file names (an LGG folder's slices are numbered 1..N without gaps, so number = index + 1)
        lgg_io.write_corrections(
            out_dir / patient.patient_id,
            result.mask,
            patient.patient_id,
            folder,
            reviewed_slices=[],
            model=seg.name,
            extra={
                "kind": "prediction",
                "threshold": args.threshold,
                "postprocess": post,
                "flagged_slices": [z for z, _ in flagged],
                "flagged_slice_files": [patient.slice_files[z] for z, _ in flagged],
                "flagged_uncertain_voxels": [round(v, 1) for _, v in flagged],
            },
        )
        d = metrics.dice(result.mask, patient.mask) if patient.mask is not None else None
        rows.append(
            {
                "patient": patient.patient_id,
                "slices": patient.image.shape[0],
                "tumour_voxels": int(result.mask.sum()),
                "dice": _fmt(d, ".4f"),
                "missing_sequences": result.sequences_note,
                "seconds": f"{result.seconds:.2f}",
                "model": seg.name,
                "flagged_slices": " ".join(str(z + 1) for z, _ in flagged),
            }
        )
        _write_csv(
            csv_path, rows, CSV_COLUMNS
        )  # rewritten after each patient: a stopped run keeps its rows
        print(
            f"{patient.patient_id}: {patient.image.shape[0]} slices, {int(result.mask.sum())} tumour voxels"
            + (f", Dice {d:.3f}" if d is not None else "")
            + f", {result.seconds:.1f} s"
            + ("" if not result.missing else f" ({result.sequences_note})")
        )
    if rows:
        print(f"wrote {len(rows)} prediction folder(s) and {csv_path}")
    if failed:
        print(
            f"{PROG}: error: {len(failed)} patient folder(s) could not be read: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 2
    return 0


# --------------------------------------------------------------------------- evaluate


def cmd_evaluate(args) -> int:
    from . import lgg_io, metrics

    folders = _select(patient_folders(args.data), patient_ids(args.patients), args.data)
    if not folders:
        raise CLIError(f"no patient folders in {', '.join(args.data)}")
    seg = _segmenter(args)
    post = _card_postprocess(seg, args.postprocess)
    print(
        f"evaluating {seg.name} on {len(folders)} patient(s), {seg.device}, post-processing {post}"
        f"{', test-time flips' if args.tta else ''}",
        file=sys.stderr,
    )
    rows, skipped = [], []
    for k, folder in enumerate(folders, 1):
        patient = lgg_io.read_patient(folder)
        if patient.mask is None:
            skipped.append(patient.patient_id)
            continue
        bar = ProgressBar(f"[{k}/{len(folders)}] {patient.patient_id}")
        try:
            result = seg.segment(patient.image, 0.5, post, progress=bar.update)
        finally:
            bar.close()
        rows.append(
            {
                "patient": patient.patient_id,
                "slices": patient.image.shape[0],
                "true_voxels": int(patient.mask.sum()),
                "predicted_voxels": int(result.mask.sum()),
                "dice": metrics.dice(result.mask, patient.mask),
                "missing_sequences": result.sequences_note,
                "seconds": round(result.seconds, 2),
            }
        )
    if not rows:
        raise CLIError(
            "none of the chosen patients has ground-truth masks (P_<n>_mask.tif) to score against"
        )
    _print_table(
        [
            [
                r["patient"],
                r["slices"],
                r["true_voxels"],
                r["predicted_voxels"],
                f"{r['dice']:.4f}",
                r["missing_sequences"],
            ]
            for r in rows
        ],
        ["patient", "slices", "true voxels", "predicted voxels", "Dice", "sequences"],
    )
    dices = [r["dice"] for r in rows]
    print(
        f"\nmodel {seg.name}: mean Dice {statistics.fmean(dices):.4f}, median Dice "
        f"{statistics.median(dices):.4f} over {len(rows)} patient(s)"
    )
    if skipped:
        print(f"skipped (no ground-truth masks): {', '.join(skipped)}")
    print(PROTOCOL_NOTE)
    if args.csv:
        for r in rows:
            r["dice"] = f"{r['dice']:.4f}"
            r["model"] = seg.name
        _write_csv(
            Path(args.csv),
            rows,
            [
                "patient",
                "slices",
                "true_voxels",
                "predicted_voxels",
                "dice",
                "missing_sequences",
                "seconds",
                "model",
            ],
        )
        print(f"wrote {args.csv}")
    return 0


# --------------------------------------------------------------------------- train


def cmd_train(args) -> int:
    import signal
    import threading

    import torch

    from . import models, training
    from .devices import resolve_device
    from .preprocess import Recipe
    from .unet import UNet

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
                f"validation Dice before {_fmt(before, '.4f')}, after {_fmt(after, '.4f')} "
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


# --------------------------------------------------------------------------- models


def cmd_models(args) -> int:
    from . import models

    action = args.action or "list"
    if action == "list":
        infos = models.list_models()
        if not infos:
            print(f"no models installed (user store: {models.user_model_dir()})")
            return 0
        _print_table(
            [
                [
                    i.name,
                    "shipped" if i.shipped else "user",
                    _fmt(i.val_dice),
                    i.parent or "",
                    i.card.get("created", "")[:16].replace("T", " "),
                ]
                for i in infos
            ],
            ["name", "kind", "val Dice", "parent", "created"],
        )
        print(f"\nuser models: {models.user_model_dir()}")
    elif action == "rename":
        info = models.rename_model(args.old, args.new)
        print(f"renamed {args.old} to {info.name}")
    elif action == "delete":
        models.delete_model(args.name)
        print(f"deleted {args.name}")
    elif action == "export":
        dest = Path(args.dest)
        if not dest.is_dir():
            raise CLIError(f"{dest}: no such folder")
        print(f"exported {args.name} to {models.export_model(args.name, dest)}")
    elif action == "import":
        info = models.import_model(args.folder, args.name)
        print(f"imported {info.name} into {info.path}")
    elif action == "download-reference":
        info = models.download_reference()
        print(
            f"reference weights stored as {info.name} in {info.path} (trained on patients outside our "
            "splits: for comparison only)"
        )
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Segment lower-grade glioma FLAIR abnormality "
        "in LGG MRI folders, measure and fine-tune the models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def engine_options(p, postprocess_help):
        p.add_argument(
            "--model", default=None, help="model name or folder (default: the shipped default)"
        )
        p.add_argument(
            "--device", default="auto", help="auto, cpu, cuda[:N] or mps (default: auto)"
        )
        p.add_argument(
            "--postprocess",
            choices=("min-size", "largest", "none"),
            default=None,
            help=postprocess_help,
        )
        p.add_argument(
            "--tta", action="store_true", help="average with the left-right flipped prediction"
        )
        p.add_argument(
            "--batch-size", type=int, default=16, help="slices per network call (default 16)"
        )

    p = sub.add_parser(
        "segment",
        help="segment patients; write prediction folders and a CSV",
        description="Segment each patient; write OUT/<patient> (a corrections folder that "
        "napari and `lggseg train` open) and OUT/segmentation.csv. Its flagged_slices column "
        "lists the slices to check first (the numbers in the file names, most uncertain first).",
    )
    p.add_argument("inputs", nargs="+", metavar="PATIENT_DIR|KAGGLE_ROOT")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument(
        "--threshold", type=float, default=0.5, help="probability threshold (default 0.5)"
    )
    engine_options(p, "default: the model card's method, else min-size")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser(
        "evaluate",
        help="per-volume Dice against expert masks",
        description="Per-volume Dice with our protocol (threshold 0.5, every original slice "
        "at original resolution). " + PROTOCOL_NOTE.split(". ", 1)[1],
    )
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="DIR",
        help="kaggle_3m-style root or patient folders",
    )
    p.add_argument(
        "--patients",
        nargs="+",
        metavar="ID",
        help="patient ids, a JSON file with a list, or FILE.json:KEY (e.g. training/splits.json:test)",
    )
    p.add_argument("--csv", metavar="FILE", help="also write the per-patient table here")
    engine_options(p, "default: the model card's method, else min-size")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
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
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("models", help="list, rename, delete, export or import models")
    msub = p.add_subparsers(dest="action", metavar="ACTION")
    msub.add_parser("list", help="the shipped and user models (default)")
    q = msub.add_parser("rename", help="rename a user model")
    q.add_argument("old")
    q.add_argument("new")
    q = msub.add_parser("delete", help="delete a user model")
    q.add_argument("name")
    q = msub.add_parser("export", help="copy a model folder (weights + card) into DEST")
    q.add_argument("name")
    q.add_argument("dest")
    q = msub.add_parser("import", help="add an exported model folder to the user store")
    q.add_argument("folder")
    q.add_argument("--name", help="store it under this name")
    msub.add_parser(
        "download-reference", help="fetch Buda et al.'s published weights (needs a network)"
    )
    p.set_defaults(func=cmd_models)
    return parser


def _user_errors() -> tuple[type, ...]:
    """Errors that are the input's fault; imported lazily so ``--help`` loads no torch."""
    from .lgg_io import LGGFormatError, LGGWriteError
    from .models import ModelError

    errors: list[type] = [CLIError, LGGFormatError, LGGWriteError, ModelError]
    if "torch" in sys.modules:  # a DeviceError or Cancelled can only come after torch was imported
        from .devices import DeviceError
        from .inference import Cancelled

        errors += [DeviceError, Cancelled]
    return tuple(errors)


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if isinstance(exc, _user_errors()):
            msg = str(exc) or type(exc).__name__
            print(f"{PROG}: error: {msg}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
