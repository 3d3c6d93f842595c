"""Open questions of the training recipe, answered on one split with one small budget:

* the loss: soft Dice vs binary cross-entropy vs their sum (the shipped recipe uses the sum);
* the inputs: FLAIR only (plus the FLAIR of the neighbouring slices) vs all three sequences.

Four arms, each trained from scratch through the package's engine (training.train) on the
``train`` patients of training/splits.json and scored on its ``validation`` patients (the test
split is not read): ``dice+bce`` with all sequences (the baseline), ``dice``, ``bce``, and
``dice+bce`` on FLAIR only. Every arm gets the same budget (``--minutes`` of wall clock each, or
``--steps``), width, size, learning rate and seeds; with several seeds the report gives the
spread across seeds and, for each arm against the baseline, the paired per-patient difference
with a bootstrap interval over patients, so small differences are not read as findings.

Results are saved after every run to ``--results`` (JSON; a re-run skips the runs already there
with the same settings), and the report is rewritten to ``--out`` (default
training/LOSS_CHANNELS.md). Run on an idle machine (a busy one gives time-budgeted arms fewer
steps; the report lists the steps each run made)::

    python training/compare_losses_channels.py --minutes 10 --seeds 0 1       # 4 arms x 2 seeds: ~95 min
    python training/compare_losses_channels.py --minutes 0.2 --max-train 2 --max-val 1 --seeds 0 \\
        --out /tmp/lc.md --results /tmp/lc.json                                 # smoke test, ~2 min
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "lgg" / "kaggle_3m"
ALL = ("pre-contrast", "FLAIR", "post-contrast")
ARMS = {  # name: (loss, channels)
    "dice+bce, 3 sequences": ("dice+bce", ALL),
    "dice, 3 sequences": ("dice", ALL),
    "bce, 3 sequences": ("bce", ALL),
    "dice+bce, FLAIR only": ("dice+bce", ("FLAIR",)),
}
BASELINE = "dice+bce, 3 sequences"


def settings_of(args) -> dict:
    """What must match for a saved run to be reused."""
    return {
        "minutes": args.minutes,
        "steps": args.steps,
        "width": args.width,
        "size": args.size,
        "context": args.context,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "steps_per_epoch": args.steps_per_epoch,
        "max_train": args.max_train,
        "max_val": args.max_val,
        "substitute": args.substitute,
    }


def run_arm(arm: str, seed: int, args, train_vols, val_vols) -> dict:
    import torch

    from napari_lggseg.preprocess import Recipe
    from napari_lggseg.training import TrainConfig, train
    from napari_lggseg.unet import UNet

    loss, channels = ARMS[arm]
    recipe = Recipe(size=args.size, context=args.context, channels=channels)
    torch.manual_seed(seed)
    model = UNet(recipe.in_channels, 1, args.width)
    epochs = None
    if args.steps:
        epochs = max(1, round(args.steps / args.steps_per_epoch))
    cfg = TrainConfig(
        epochs=epochs,
        minutes=None if args.steps else args.minutes,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        lr=args.lr,
        loss=loss,
        substitute=args.substitute,
        seed=seed,
        device=args.device,
        warmup_steps=min(100, max(1, (args.steps or 10**9) // 10)),
    )
    t0 = time.perf_counter()
    result = train(model, recipe, train_vols, val_vols, cfg)
    final = result.history[-1]
    return {
        "arm": arm,
        "seed": seed,
        "loss": loss,
        "channels": list(channels),
        "steps": result.steps,
        "seconds": round(time.perf_counter() - t0, 1),
        "stopped": result.stopped,
        "best_epoch": result.best_epoch,
        "best_mean": result.best_val_dice,
        "per_patient": result.val_per_patient,
        "final_mean": final["val_dice"],
        "history": [
            {k: r[k] for k in ("epoch", "step", "loss", "val_dice")} for r in result.history
        ],
    }


def bootstrap_ci(diffs: np.ndarray, n: int = 4000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(diffs, size=(n, len(diffs)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def fmt(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


def write_report(path: Path, runs: list[dict], args, meta: dict) -> str:
    arms = [a for a in ARMS if any(r["arm"] == a for r in runs)]
    seeds = sorted({r["seed"] for r in runs})
    lines = [
        "# Loss and input channels: what the small-budget comparison says",
        "",
        f"Written by `training/compare_losses_channels.py` on {meta['date']} ({meta['machine']}). "
        "Each arm trains a fresh U-Net through `training.train` on the `train` patients of "
        "`training/splits.json` and is scored on its `validation` patients (per-volume Dice on the "
        "original slices, threshold 0.5, min-size post-processing); the test split is not read.",
        "",
        f"- Budget per run: {budget_words(args)}; width {args.width}, {args.size} px, "
        f"{args.context} context slice(s) each side, batch {args.batch_size}, lr {args.lr}, "
        f"{args.steps_per_epoch} steps per epoch, sequence substitution {args.substitute} (3-sequence arms).",
        f"- Patients: {meta['n_train']} train, {meta['n_val']} validation. Seeds: {', '.join(map(str, seeds))}.",
        f"- Command: `{meta['command']}`",
        "",
        "| arm | runs | steps | val mean Dice (best epoch) | seed spread | val median Dice | "
        "val mean Dice (last epoch) | vs baseline: paired per-patient difference [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for arm in arms:
        rs = [r for r in runs if r["arm"] == arm]
        bests = [r["best_mean"] for r in rs if r["best_mean"] is not None]
        medians = [statistics.median(r["per_patient"].values()) for r in rs if r["per_patient"]]
        finals = [r["final_mean"] for r in rs if r["final_mean"] is not None]
        spread = (max(bests) - min(bests)) if len(bests) > 1 else None
        diff_txt = "(baseline)"
        if arm != BASELINE:
            diffs = []
            for r in rs:
                base = next(
                    (b for b in runs if b["arm"] == BASELINE and b["seed"] == r["seed"]), None
                )
                if base:
                    diffs += [
                        r["per_patient"][p] - base["per_patient"][p]
                        for p in r["per_patient"]
                        if p in base["per_patient"]
                    ]
            if diffs:
                d = np.asarray(diffs)
                lo, hi = bootstrap_ci(d)
                diff_txt = f"{d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]"
                base_spread = [
                    b["best_mean"]
                    for b in runs
                    if b["arm"] == BASELINE and b["best_mean"] is not None
                ]
                noise = max(
                    spread or 0.0,
                    (max(base_spread) - min(base_spread)) if len(base_spread) > 1 else 0.0,
                )
                if lo <= 0 <= hi or abs(d.mean()) <= noise:
                    verdicts.append(
                        f"- **{arm}** vs baseline: {d.mean():+.3f} mean Dice per patient; the interval "
                        f"includes zero or the difference is within the seed spread: no evidence of a difference "
                        f"at this budget."
                    )
                else:
                    word = "better" if d.mean() > 0 else "worse"
                    verdicts.append(
                        f"- **{arm}** vs baseline: {d.mean():+.3f} mean Dice per patient "
                        f"[{lo:+.3f}, {hi:+.3f}]: {word} at this budget (over {len(rs)} seed(s))."
                    )
        lines.append(
            f"| {arm} | {len(rs)} | {', '.join(str(r['steps']) for r in rs)} | "
            f"{fmt(statistics.fmean(bests)) if bests else '-'} | {fmt(spread)} | "
            f"{fmt(statistics.fmean(medians)) if medians else '-'} | "
            f"{fmt(statistics.fmean(finals)) if finals else '-'} | {diff_txt} |"
        )
    lines += ["", "## Reading it", ""]
    lines += verdicts or ["- Only the baseline ran: nothing to compare."]
    lines += [
        "",
        "How noisy this is: the seed spread column is the range of the best-epoch mean Dice over seeds "
        "(same data, same budget, different initialisation and sampling). The paired difference compares "
        "each patient's Dice under an arm with the baseline's at the same seed; its interval is a bootstrap "
        "over patients (4000 resamples) and ignores seed-to-seed variation, so read it together with the "
        f"spread. With {meta['n_val']} validation patients, differences below a few Dice points are not findings. The "
        "best epoch is chosen on the same validation patients, which flatters every arm alike; the last-epoch "
        "column avoids that selection.",
        "",
        "## Runs",
        "",
        "| arm | seed | steps | seconds | stopped | best epoch | best mean | last mean |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['arm']} | {r['seed']} | {r['steps']} | {r['seconds']} | {r['stopped']} | "
            f"{r['best_epoch']} | {fmt(r['best_mean'])} | {fmt(r['final_mean'])} |"
        )
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def budget_words(args) -> str:
    return (
        f"{args.steps} steps"
        if args.steps
        else f"{args.minutes} minutes of wall clock ({args.threads} threads)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--splits", type=Path, default=HERE / "splits.json")
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument(
        "--minutes", type=float, default=10.0, help="wall-clock budget per run (default 10)"
    )
    budget.add_argument(
        "--steps", type=int, help="a fixed number of steps per run instead of minutes"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--context", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps-per-epoch", type=int, default=50)
    ap.add_argument("--substitute", type=float, default=0.4)
    ap.add_argument("--max-train", type=int, help="only the first N train patients (smoke tests)")
    ap.add_argument(
        "--max-val", type=int, help="only the first N validation patients (smoke tests)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=HERE / "LOSS_CHANNELS.md")
    ap.add_argument("--results", type=Path, default=HERE / "LOSS_CHANNELS.json")
    args = ap.parse_args()
    if args.steps:
        args.minutes = None

    import torch

    from napari_lggseg.train_data import load_volumes

    torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        sys.exit(f"{args.data}: no such folder (the real LGG data is needed)")
    splits = json.loads(args.splits.read_text())
    train_ids, val_ids = (
        sorted(splits["train"])[: args.max_train],
        sorted(splits["validation"])[: args.max_val],
    )
    t0 = time.perf_counter()
    train_vols = load_volumes([args.data], patients=set(train_ids))
    val_vols = load_volumes([args.data], patients=set(val_ids))
    print(
        f"loaded {len(train_vols)} train / {len(val_vols)} validation volumes in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )

    settings = settings_of(args)
    saved = json.loads(args.results.read_text()) if args.results.is_file() else {}
    runs = [r for r in saved.get("runs", []) if saved.get("settings") == settings]
    for seed in args.seeds:
        for arm in args.arms:
            if any(r["arm"] == arm and r["seed"] == seed for r in runs):
                print(f"{arm}, seed {seed}: already in {args.results}", flush=True)
                continue
            r = run_arm(arm, seed, args, train_vols, val_vols)
            runs.append(r)
            args.results.write_text(
                json.dumps({"settings": settings, "runs": runs}, indent=1) + "\n"
            )
            print(
                f"{arm}, seed {seed}: {r['steps']} steps, best val mean Dice {fmt(r['best_mean'])} "
                f"(epoch {r['best_epoch']}), last {fmt(r['final_mean'])}",
                flush=True,
            )
    runs = [r for r in runs if r["arm"] in args.arms and r["seed"] in args.seeds]
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {args.threads} threads, torch {torch.__version__}",
        "n_train": len(train_vols),
        "n_val": len(val_vols),
        "command": "python training/compare_losses_channels.py " + " ".join(sys.argv[1:]),
    }
    print(write_report(args.out, runs, args, meta))


if __name__ == "__main__":
    main()
