"""Write training/splits.json: patient-level test / validation / train splits of the 80 patients.

Test (14 patients) and validation (10) are stratified by institution (largest remainder), seeded.
The test split is looked at once per shipped model, never to choose anything.

    python training/make_splits.py [--data ../shared/lgg/kaggle_3m]
"""

import argparse
import json
from pathlib import Path

from napari_lggseg.lgg_io import list_patients
from napari_lggseg.train_data import split_patients

HERE = Path(__file__).parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "lgg" / "kaggle_3m"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    ids = [p.name for p in list_patients(args.data)]
    rest, test = split_patients(ids, val_fraction=14 / len(ids), seed=args.seed)
    train, val = split_patients(rest, val_fraction=10 / len(rest), seed=args.seed + 1)
    out = {
        "seed": args.seed,
        "note": "patient-level; stratified by institution; test is never used to choose anything",
        "test": test,
        "validation": val,
        "train": train,
    }
    (HERE / "splits.json").write_text(json.dumps(out, indent=2) + "\n")
    for k in ("train", "validation", "test"):
        inst = {}
        for pid in out[k]:
            inst[pid.split("_")[1]] = inst.get(pid.split("_")[1], 0) + 1
        print(k, len(out[k]), dict(sorted(inst.items())))


if __name__ == "__main__":
    main()
