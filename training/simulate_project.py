"""Does an annotation project's round make the next case of a new site need less correction,
without forgetting the LGG set? A seeded simulation through the product's own code.

    python training/simulate_project.py                  # ablation + simulation -> training/PROJECT.md
    python training/simulate_project.py --only ablation  # the anti-forgetting candidates only
    python training/simulate_project.py --quick          # smoke run into runs/simulate-project-quick/

Sites (never the test split):

* **site A**: the base model's validation patients of one institution (``--institution``, DU:
  5 patients, never trained on) with a site shift applied (``site_shift``: skull-stripped, slices
  twice as thick, z-scored intensities), written as NIfTI case folders to ``runs/`` (never
  committed) and opened as a real :class:`~napari_lggseg.project.Project`;
* **site B**: the two BraTS-2018 cases in ``../shared/external/brats18`` (leave-one-out).

For each draw (a fixed random order of the site's cases) the simulated annotator opens the cases
in order: the project predicts each one with its current model (``Project.predict``: the Dice
before correction is what the annotator has to fix), the expert mask stands in for the
correction (``Project.done``), and after every k done cases the product's round runs
(:func:`napari_lggseg.project_rounds.run_round`). Arms: ``adapt`` (rounds with the default
round), ``none`` (no rounds: the base model throughout), and the older round for reference.
Forgetting: each round's model on the base model's own validation patients of the other
institutions (clean LGG scans). The ablation compares the anti-forgetting candidates on the same
draws: 3 corrected site-A cases, Dice on the site's other cases and on the LGG validation
patients of the other institutions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "lgg" / "kaggle_3m"
BRATS = REPO.parent / "shared" / "external" / "brats18"
BASE = "lgg-fast"
SPACING = (6.0, 0.94, 0.94)  # site A: z, y, x mm (slices twice as thick as the LGG set's ~3 mm)


# --------------------------------------------------------------------------- the sites


def write_site_a(out: Path, ids: list[str], data: Path = DATA, seed: int = 0) -> Path:
    """Site A as NIfTI case folders ``out/<id>/<id>_{t1,flair,t1ce,seg}.nii.gz`` (kept when
    already written): skull-stripped, thicker slices, z-scored, on an LPS grid."""
    import nibabel as nib

    from napari_lggseg import lgg_io, site_shift

    out.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-SPACING[2], -SPACING[1], SPACING[0], 1.0])  # LPS: the model orientation
    for k, pid in enumerate(ids):
        folder = out / pid
        if (folder / f"{pid}_seg.nii.gz").exists():
            continue
        p = lgg_io.read_patient(data / pid)
        rng = np.random.default_rng([seed, k])
        image, mask = site_shift.skull_strip(p.image, p.mask, rng)
        image, mask = site_shift.thicker_slices(image, mask, rng, factor=2)
        image, mask = site_shift.zscored(image, mask, rng)
        tmp = out / f".{pid}.partial"
        tmp.mkdir(exist_ok=True)
        for c, seq in enumerate(("t1", "flair", "t1ce")):  # LGG channel order
            vol = np.swapaxes(image[..., c], 0, 2).astype(np.float32)  # (Z, Y, X) -> (i, j, k)
            nib.Nifti1Image(vol, affine).to_filename(tmp / f"{pid}_{seq}.nii.gz")
        seg = np.swapaxes((mask > 0).astype(np.uint8), 0, 2)
        nib.Nifti1Image(seg, affine).to_filename(tmp / f"{pid}_seg.nii.gz")
        os.replace(tmp, folder)
    return out


def site_a_ids(institution: str) -> list[str]:
    splits = json.loads((HERE / "splits.json").read_text())
    return [p for p in splits["validation"] if p.split("_")[1] == institution]


def forgetting_ids(institution: str) -> list[str]:
    """The base model's validation patients of the other institutions (clean LGG scans)."""
    splits = json.loads((HERE / "splits.json").read_text())
    return [p for p in splits["validation"] if p.split("_")[1] != institution]


# --------------------------------------------------------------------------- measuring


def segmenter_for(state_dict: dict | None, name: str = BASE):
    """A segmenter of ``name``'s architecture and post-processing with ``state_dict`` (None:
    ``name``'s own weights)."""
    from napari_lggseg import models
    from napari_lggseg.inference import Segmenter
    from napari_lggseg.preprocess import Recipe
    from napari_lggseg.unet import load_state_dict_strict

    info = models.get_model(name)
    net = models.build_model(info.card)
    load_state_dict_strict(net, state_dict or models.load_state_dict(info), info.name)
    seg = Segmenter(net, Recipe.from_dict(info.card["preprocessing"]), "cpu", name=info.name)
    seg.default_postprocess = info.card.get("postprocessing", {}).get("method", "min-size")
    return seg


def site_dice(segmenter, project, case_ids) -> dict[str, float]:
    """Dice of ``segmenter`` on project cases (read and segmented as the project does)."""
    from napari_lggseg.metrics import dice

    out = {}
    for case_id in case_ids:
        data = project.load_case(case_id)
        seg = project.source.segment(segmenter, data)
        out[case_id] = float(dice(seg.mask, data.expert_mask))
    return out


def lgg_dice(segmenter, patients) -> dict[str, float]:
    from napari_lggseg.metrics import dice

    return {p.patient_id: float(dice(segmenter.segment(p.image).mask, p.mask)) for p in patients}


def read_lgg(ids, data: Path = DATA):
    from napari_lggseg import lgg_io

    return [lgg_io.read_patient(data / i) for i in ids]


# --------------------------------------------------------------------------- ablation

# name -> (what it is, TrainConfig changes on top of the round's defaults for 3 volumes)
CANDIDATES = {
    "old": ("the round before: lr 1e-4, BatchNorm frozen", {"l2sp": 0.0, "site_bn": 0.0}),
    "lr5e-4": ("lr 5e-4, BatchNorm frozen", {"lr": 5e-4, "l2sp": 0.0, "site_bn": 0.0}),
    "lr3e-5": ("lr 3e-5, BatchNorm frozen", {"lr": 3e-5, "l2sp": 0.0, "site_bn": 0.0}),
    "l2sp": ("lr 5e-4 + L2-SP 0.01", {"lr": 5e-4, "l2sp": 0.01, "weight_decay": 0.0, "site_bn": 0.0}),
    "l2sp0.1": ("lr 5e-4 + L2-SP 0.1", {"lr": 5e-4, "l2sp": 0.1, "weight_decay": 0.0, "site_bn": 0.0}),
    "l2sp-lo0.1": ("lr 1e-4 + L2-SP 0.1", {"l2sp": 0.1, "weight_decay": 0.0, "site_bn": 0.0}),
    "l2sp-lo1": ("lr 1e-4 + L2-SP 1", {"l2sp": 1.0, "weight_decay": 0.0, "site_bn": 0.0}),
    "l2sp1": ("lr 5e-4 + L2-SP 1", {"lr": 5e-4, "l2sp": 1.0, "weight_decay": 0.0, "site_bn": 0.0}),
    "bn": ("site BatchNorm statistics, then lr 1e-4", {"site_bn": 1.0, "l2sp": 0.0}),
    "bn-half": ("half site BatchNorm statistics, then lr 1e-4", {"site_bn": 0.5, "l2sp": 0.0}),
    "bn+l2sp": (
        "site BatchNorm statistics, then lr 5e-4 + L2-SP 0.01",
        {"site_bn": 1.0, "lr": 5e-4, "l2sp": 0.01, "weight_decay": 0.0},
    ),
}  # fmt: skip
# "<candidate>+wise<b>": that candidate's weights averaged with the parent's, b of the fine-tuned
# (WiSE-FT, Wortsman et al. 2022); no extra training


def interpolate(parent: dict, tuned: dict, share: float) -> dict:
    return {
        k: (share * tuned[k].float() + (1 - share) * parent[k].float()).to(tuned[k].dtype)
        if tuned[k].is_floating_point()
        else tuned[k]
        for k in tuned
    }


def ablation_config(changes: dict, n: int, seed: int):
    from napari_lggseg.finetune import fine_tune_config

    cfg = fine_tune_config(n, device="cpu", seed=seed)
    cfg.minutes = None  # every round makes exactly its steps (the product caps at ~51 s)
    for k, v in changes.items():
        setattr(cfg, k, v)
    return cfg


def run_ablation(args, site_root: Path, rows_path: Path) -> list[dict]:
    """Each candidate on the same draws: 3 corrected site-A cases, measured on the others."""
    from safetensors.torch import load_file, save_file

    from napari_lggseg import models
    from napari_lggseg.finetune import fine_tune
    from napari_lggseg.project import Project
    from napari_lggseg.project_rounds import round_volumes
    from napari_lggseg.train_data import prepare_volumes
    from napari_lggseg.training import site_batchnorm

    rows = json.loads(rows_path.read_text()) if rows_path.exists() else []
    done = {(r["draw"], r["candidate"]) for r in rows}
    others = read_lgg(forgetting_ids(args.institution))
    base = segmenter_for(None)
    parent = models.load_state_dict(models.get_model(BASE))
    weights = rows_path.parent / "ablation_weights"  # each draw's fine-tuned weights, for averages
    weights.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, Project.create(site_root, Path(tmp) / "p") as proj:
        ids = [r.case_id for r in proj.rows()]
        for case_id in ids:
            proj.done(case_id, proj.load_case(case_id).expert_mask)
        base_site = site_dice(base, proj, ids)
        base_lgg = lgg_dice(base, others)
        rng = np.random.default_rng(args.seed)
        for d in range(args.draws):
            order = [str(i) for i in rng.permutation(ids)]
            train_ids, held = order[: args.k], order[args.k :]
            vols = round_volumes(proj, train_ids)
            for name in ["bn-only", *args.candidates]:
                if (d, name) in done:
                    continue
                t0 = time.time()
                if name == "bn-only":  # no gradient step: only the statistics
                    seg = segmenter_for(None)
                    data = prepare_volumes(vols, seg.recipe)
                    site_batchnorm(seg.model, data, torch.device("cpu"), 1.0, args.seed)
                    steps = 0
                elif "+wise" in name:
                    of, share = name.split("+wise")
                    if not (weights / f"{d}-{of}.safetensors").exists():
                        continue
                    tuned = load_file(str(weights / f"{d}-{of}.safetensors"))
                    seg = segmenter_for(interpolate(parent, tuned, float(share)))
                    steps = next(
                        r["steps"] for r in rows if r["draw"] == d and r["candidate"] == of
                    )
                else:
                    cfg = ablation_config(CANDIDATES[name][1], len(vols), args.seed)
                    _, result = fine_tune(BASE, vols, config=cfg, save=False)
                    save_file(result.state_dict, str(weights / f"{d}-{name}.safetensors"))
                    seg, steps = segmenter_for(result.state_dict), result.steps
                secs = time.time() - t0
                s, o = site_dice(seg, proj, held), lgg_dice(seg, others)
                rows.append({
                    "draw": d, "candidate": name, "trained_on": train_ids, "held": held,
                    "site": s, "lgg": o, "steps": steps, "seconds": round(secs, 1),
                    "site_before": {i: base_site[i] for i in held}, "lgg_before": base_lgg,
                })  # fmt: skip
                rows_path.write_text(json.dumps(rows, indent=1))
                print(
                    f"draw {d} {name:8s}: site {np.mean(list(s.values())):.3f} "
                    f"(base {np.mean([base_site[i] for i in held]):.3f}), LGG "
                    f"{np.mean(list(o.values())):.3f} (base {np.mean(list(base_lgg.values())):.3f}), "
                    f"{secs:.0f} s",
                    flush=True,
                )
    return rows


# --------------------------------------------------------------------------- the simulation


def round_config(arm: str, n: int, seed: int):
    """The round an arm runs: the product's default (``adapt``) or an ablation candidate, with
    the clock cap lifted so that a round makes its steps on a loaded machine too."""
    from napari_lggseg.finetune import fine_tune_config

    if arm == "adapt":
        cfg = fine_tune_config(n, device="cpu", seed=seed)
        cfg.minutes = None
        return cfg
    return ablation_config(CANDIDATES[arm][1], n, seed)


def simulate_draw(site: str, root: Path, order, arm: str, k: int, lgg, seed: int) -> dict:
    """One annotator through ``order`` in a real project: predict with the current model (the
    Dice before correction), correct (the expert mask), a round after every k done cases."""
    from napari_lggseg.inference import Segmenter
    from napari_lggseg.project import Project
    from napari_lggseg.project_rounds import run_round

    row = {"site": site, "arm": arm, "order": list(order), "k": k, "curve": [], "models": []}
    row["rounds"] = []
    with tempfile.TemporaryDirectory() as tmp, Project.create(root, Path(tmp) / "p") as proj:
        proj.settings.round_every = k if arm != "none" else 0
        proj.use_model(BASE)
        for i, case_id in enumerate(order):
            seg = Segmenter.from_store(proj.current_model, device="cpu")
            proj.predict(case_id, seg)
            row["curve"].append(proj.record(case_id).dice)
            row["models"].append(proj.current_model)
            proj.done(case_id, proj.load_case(case_id).expert_mask)
            if not proj.round_due() or i == len(order) - 1:
                continue
            t0 = time.time()
            r = run_round(proj, config=round_config(arm, len(proj.done_cases()), seed))
            seconds = time.time() - t0
            new = Segmenter.from_store(r.model, device="cpu")
            rest = list(order[i + 1 :])
            row["rounds"].append({
                "after": i + 1, "model": r.model, "seconds": round(seconds, 1),
                "steps": models_steps(r.model), "site_rest": site_dice(new, proj, rest),
                "lgg": lgg_dice(new, lgg),
            })  # fmt: skip
            print(f"{site} {arm} {order}: round after {i + 1}: {row['rounds'][-1]}", flush=True)
    return row


def models_steps(name: str) -> int:
    from napari_lggseg import models

    return int(models.get_model(name).card["training"]["steps"])


def run_simulation(args, site_root: Path, rows_path: Path) -> list[dict]:
    from napari_lggseg.lgg_io import list_patients  # noqa: F401  (data present check)

    rows = json.loads(rows_path.read_text()) if rows_path.exists() else []
    have = {(r["site"], r["arm"], tuple(r["order"])) for r in rows}
    splits = json.loads((HERE / "splits.json").read_text())
    plans = []
    a_ids = sorted(p.name for p in site_root.iterdir() if p.is_dir())
    rng = np.random.default_rng(args.seed)  # the ablation's draws: the same orders
    a_orders = [[str(i) for i in rng.permutation(a_ids)] for _ in range(args.draws)]
    lgg_a = read_lgg(forgetting_ids(args.institution))
    for arm in ("none", *args.arms):
        plans += [("A", site_root, o, arm, args.k, lgg_a) for o in a_orders]
    if BRATS.is_dir():
        b_ids = sorted(p.name for p in BRATS.iterdir() if p.is_dir())
        lgg_b = read_lgg(splits["validation"])
        for arm in ("none", *args.arms):
            plans += [("B", BRATS, o, arm, 1, lgg_b) for o in (b_ids, b_ids[::-1])]
    for site, root, order, arm, k, lgg in plans:
        if (site, arm, tuple(order)) in have:
            continue
        rows.append(simulate_draw(site, root, order, arm, k, lgg, args.seed))
        rows_path.write_text(json.dumps(rows, indent=1))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--institution", default="DU")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--k", type=int, default=3, help="a round after every k done cases")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=("ablation", "simulation", "report"), default=None)
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--arms", default="adapt,old", help="round arms besides 'none' (no rounds)")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "simulate-project")
    args = ap.parse_args()
    args.candidates = [c for c in args.candidates.split(",") if c]
    args.arms = [a for a in args.arms.split(",") if a]
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LGGSEG_MODEL_DIR", str(args.work / "models"))
    site_root = write_site_a(args.work / "site-a", site_a_ids(args.institution), seed=args.seed)
    if args.only in (None, "ablation"):
        run_ablation(args, site_root, args.work / "ablation_rows.json")
    if args.only in (None, "simulation"):
        run_simulation(args, site_root, args.work / "simulation_rows.json")
    print(platform.node())


if __name__ == "__main__":
    main()
