"""``lggseg``: segment, evaluate, train and manage models from a terminal.

    lggseg segment PATIENT_DIR|KAGGLE_ROOT ... --out DIR        predictions as corrections folders + CSV
    lggseg evaluate --data KAGGLE_ROOT --patients training/splits.json:test
    lggseg train --data DIR ... [--from MODEL] --name NEW --minutes 20
    lggseg features PATIENT_DIR|KAGGLE_ROOT|NIFTI_CASE ... --out FILE.csv [--masks predicted]
    lggseg models [list|rename|delete|export|import|download-reference]

One module per command (``cli/<command>.py``: ``add_parser(subparsers)`` and ``run(args)``);
they call the same core functions as the napari widgets. Torch is imported inside the commands,
so ``--help`` is quick. An expected failure (bad input, a bad model, a full disk, permissions)
prints one ``lggseg: error: <path>: <problem>`` line and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys

from . import evaluate, features, models, segment, train
from ._common import PROG, CLIError, ProgressBar, run_command
from .segment import CSV_COLUMNS

COMMANDS = (segment, evaluate, train, features, models)

__all__ = ["CSV_COLUMNS", "COMMANDS", "PROG", "CLIError", "ProgressBar", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Segment lower-grade glioma FLAIR abnormality "
        "in LGG MRI folders, measure and fine-tune the models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv=None) -> int:
    """The ``lggseg`` entry point; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return run_command(args.run, args)
