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
from simulate_hitl import DEFAULT_DATA, evaluate, segmenter_for  # noqa: E402

CONFIGS = {  # name: (TrainConfig overrides, trainable parameter prefixes or None for all)
    "default": ({}, None),
    "lr1e-4": ({"lr": 1e-4}, None),
    "lr3e-5": ({"lr": 3e-5}, None),
    "decoder": ({}, ("upconv", "decoder", "conv")),
    "head": ({"lr": 1e-3}, ("decoder1", "conv")),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--base", default="hitl-base-noHT")
    ap.add_argument("--base-dir", type=Path, default=HERE.parent / "runs" / "hitl-store")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--ks", default="1,3")
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--held-out", type=int, default=8, help="HT patients evaluated per draw")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["LGGSEG_MODEL_DIR"] = str(args.base_dir)

    from napari_lggseg import lgg_io, models, training
    from napari_lggseg.finetune import default_config
    from napari_lggseg.preprocess import Recipe
    from napari_lggseg.training import TrainVolume, split_patients

    def volume(folder):
        p = lgg_io.read_patient(folder)
        return TrainVolume(p.patient_id, p.image, p.mask)

    folders = lgg_io.list_patients(args.data)
    site = {f.name: volume(f) for f in folders if lgg_io.institution_of(f.name) == "HT"}
    rest = [f.name for f in folders if lgg_io.institution_of(f.name) != "HT"]
    _train_ids, val_ids = split_patients(rest, 0.1, 0)
    others = [volume(args.data / i) for i in val_ids]
    info = models.get_model(args.base)
    base_sd = models.load_state_dict(info)
    base_seg = segmenter_for(base_sd, info)
    before = evaluate(base_seg, site.values())
    other_before = float(np.mean(list(evaluate(base_seg, others).values())))
    rng = np.random.default_rng(args.seed)
    ks = [int(k) for k in args.ks.split(",")]
    rows = []
    for d in range(args.draws):
        order = list(rng.permutation(sorted(site)))
        corrected, held = order[: max(ks)], order[max(ks): max(ks) + args.held_out]
        b = float(np.mean([before[i] for i in held]))
        for k in ks:
            vols = [site[i] for i in corrected[:k]]
            for name in args.configs.split(","):
                overrides, trainable = CONFIGS[name]
                cfg = default_config(len(vols))
                cfg.minutes, cfg.device = None, "cpu"
                for key, value in overrides.items():
                    setattr(cfg, key, value)
                net, _ = models.load_model(args.base)
                if trainable:
                    for pname, p in net.named_parameters():
                        p.requires_grad_(pname.startswith(trainable))
                t0 = time.perf_counter()
                res = training.train(net, Recipe.from_dict(info.card["preprocessing"]), vols, vols, cfg,
                                     fine_tune=True)
                secs = time.perf_counter() - t0
                tuned = segmenter_for(res.state_dict, info)
                a = float(np.mean(list(evaluate(tuned, [site[i] for i in held]).values())))
                o = float(np.mean(list(evaluate(tuned, others).values())))
                rows.append({"config": name, "draw": d, "k": k, "delta": a - b, "before": b, "after": a,
                             "other_delta": o - other_before, "best_epoch": res.best_epoch, "seconds": secs})
                print(json.dumps(rows[-1]), flush=True)
    print("\n| config | k | Δ held-out HT | Δ other sites | rounds |\n|---|---|---|---|---|")
    for name in args.configs.split(","):
        for k in ks:
            sel = [r for r in rows if r["config"] == name and r["k"] == k]
            print(f"| {name} | {k} | {np.mean([r['delta'] for r in sel]):+.3f} | "
                  f"{np.mean([r['other_delta'] for r in sel]):+.3f} | {len(sel)} |")


if __name__ == "__main__":
    main()
