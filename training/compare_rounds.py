"""Which fine-tuning round helps on a new site without hurting elsewhere? A small, seeded comparison.

    python training/compare_rounds.py                      # base from simulate_hitl.py (HT held out)
    python training/compare_rounds.py --configs default,lr1e-4 --draws 3

For each configuration, each draw picks k HT volumes as "corrected" (ground truth stands in for the
corrections), fine-tunes the HITL base model on them (validated on those volumes, as the widget
does) and measures mean per-volume Dice on the other HT patients and on the base model's own
validation patients (other institutions: forgetting). Prints one JSON row per round and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from simulate_hitl import DEFAULT_DATA, base_split, evaluate, read_volume, segmenter_for  # noqa: E402

CONFIGS = {  # name: (description, TrainConfig overrides, trainable parameter prefixes or None for all)
    "lr3e-4": ("lr 3e-4, all layers (the round before this comparison)", {"lr": 3e-4}, None),
    "lr1e-4": ("lr 1e-4, all layers (the round now)", {"lr": 1e-4}, None),
    "lr3e-5": ("lr 3e-5, all layers", {"lr": 3e-5}, None),
    "decoder3e-4": ("lr 3e-4, decoder only", {"lr": 3e-4}, ("upconv", "decoder", "conv")),
    "decoder1e-4": ("lr 1e-4, decoder only", {"lr": 1e-4}, ("upconv", "decoder", "conv")),
    "head1e-3": ("lr 1e-3, last block and output only", {"lr": 1e-3}, ("decoder1", "conv")),
}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--base", default="hitl-base-noHT")
    ap.add_argument("--base-dir", type=Path, default=HERE.parent / "runs" / "hitl-store")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--ks", default="1,3")
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--held-out", type=int, default=8, help="HT patients evaluated per draw")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "ROUNDS.md")
    ap.add_argument(
        "--rows",
        type=Path,
        default=HERE / "figures" / "rounds_rows.json",
        help="rounds already measured (same base, seed and draws) are read from here, not re-run",
    )
    args = ap.parse_args()
    t_all = time.perf_counter()
    torch.set_num_threads(args.threads)
    os.environ["LGGSEG_MODEL_DIR"] = str(args.base_dir)

    from napari_lggseg import lgg_io, models, training
    from napari_lggseg.finetune import fine_tune_config
    from napari_lggseg.preprocess import Recipe

    info = models.get_model(args.base)
    site = {
        f.name: read_volume(f)
        for f in lgg_io.list_patients(args.data)
        if lgg_io.institution_of(f.name) == "HT"
    }
    others = [read_volume(args.data / i) for i in base_split(info)[1]]
    base_sd = models.load_state_dict(info)
    base_seg = segmenter_for(base_sd, info)
    before = evaluate(base_seg, site.values())
    other_before = float(np.mean(list(evaluate(base_seg, others).values())))
    rng = np.random.default_rng(args.seed)
    ks = [int(k) for k in args.ks.split(",")]
    rows = json.loads(args.rows.read_text()) if args.rows.exists() else []
    same_setup = (args.base, args.seed, args.held_out)
    done = {
        (r["config"], r["draw"], r["k"])
        for r in rows
        if (r["base"], r["seed"], r["held_out"]) == same_setup
    }
    for d in range(args.draws):
        order = list(rng.permutation(sorted(site)))
        corrected, held = order[: max(ks)], order[max(ks) : max(ks) + args.held_out]
        b = float(np.mean([before[i] for i in held]))
        for k in ks:
            vols = [site[i] for i in corrected[:k]]
            for name in args.configs.split(","):
                if (name, d, k) in done:
                    continue
                _desc, overrides, trainable = CONFIGS[name]
                cfg = fine_tune_config(len(vols))
                cfg.minutes, cfg.device = None, "cpu"
                for field, value in overrides.items():
                    setattr(cfg, field, value)
                net, _ = models.load_model(args.base)
                if trainable:
                    for pname, p in net.named_parameters():
                        p.requires_grad_(pname.startswith(trainable))
                t0 = time.perf_counter()
                res = training.train(
                    net,
                    Recipe.from_dict(info.card["preprocessing"]),
                    vols,
                    vols,
                    cfg,
                    fine_tune=True,
                )
                secs = time.perf_counter() - t0
                tuned = segmenter_for(res.state_dict, info)
                a = float(np.mean(list(evaluate(tuned, [site[i] for i in held]).values())))
                o = float(np.mean(list(evaluate(tuned, others).values())))
                rows.append(
                    {
                        "config": name,
                        "draw": d,
                        "k": k,
                        "delta": a - b,
                        "before": b,
                        "after": a,
                        "other_delta": o - other_before,
                        "best_epoch": res.best_epoch,
                        "seconds": secs,
                        "base": args.base,
                        "seed": args.seed,
                        "held_out": args.held_out,
                        "corrected": corrected[:k],
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
                args.rows.parent.mkdir(exist_ok=True)
                args.rows.write_text(json.dumps(rows, indent=1))
    write_report(
        args,
        [r for r in rows if (r["base"], r["seed"], r["held_out"]) == same_setup],
        time.perf_counter() - t_all,
    )


def write_report(args, rows, wall: float) -> None:
    ks = sorted({r["k"] for r in rows})
    lines = [
        "# Which fine-tuning round? Gains on a held-out institution against losses elsewhere",
        "",
        f"Generated by `python training/compare_rounds.py --configs {args.configs} --ks {args.ks} "
        f"--draws {args.draws} --seed {args.seed}`; rounds already in "
        f"`{args.rows.relative_to(HERE.parent) if args.rows.is_relative_to(HERE.parent) else args.rows}` are reused "
        f"(this call: {wall / 60:.0f} min). A round took {np.mean([r['seconds'] for r in rows]):.0f} s on average "
        "on 1–2 CPU threads of a machine shared with other runs; training is deterministic (a rerun gives the "
        "same rows).",
        "",
        f"Base `{args.base}` (trained without HT by `simulate_hitl.py`). Each round: k HT volumes "
        "corrected (ground truth), 30 steps of 16 slices, validated on the corrected slices like the widget. "
        f"Δ = mean per-volume Dice after − before on {args.held_out} other HT patients per draw, and on the "
        "base model's own validation patients (other institutions: forgetting). Per-draw values in brackets.",
        "",
        "| round | k | Δ Dice held-out HT | Δ Dice other institutions | draws |",
        "|---|---|---|---|---|",
    ]
    for name in args.configs.split(","):
        for k in ks:
            sel = [r for r in rows if r["config"] == name and r["k"] == k]
            if not sel:
                continue
            per = ", ".join(f"{r['delta']:+.3f}" for r in sel)
            per_o = ", ".join(f"{r['other_delta']:+.3f}" for r in sel)
            lines.append(
                f"| {name}: {CONFIGS[name][0]} | {k} | {np.mean([r['delta'] for r in sel]):+.3f} ({per}) | "
                f"{np.mean([r['other_delta'] for r in sel]):+.3f} ({per_o}) | {len(sel)} |"
            )
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
