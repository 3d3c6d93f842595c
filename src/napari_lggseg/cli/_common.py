"""What the ``lggseg`` commands share: the error line, the progress bar, tables, CSVs, and
turning command-line paths and ids into patient folders, scan cases and a segmenter."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROG = "lggseg"


class CLIError(Exception):
    """A problem with what the user asked for; printed as one line, exit code 2."""


# --------------------------------------------------------------------------- errors


def _expected_errors() -> tuple[type, ...]:
    """Errors that are the input's or the disk's fault, not bugs; imported lazily so ``--help``
    loads no torch."""
    from ..lgg_io import LGGFormatError, LGGWriteError
    from ..models import ModelError
    from ..scan_io import ScanFormatError

    errors: list[type] = [CLIError, LGGFormatError, LGGWriteError, ModelError, ScanFormatError]
    errors.append(OSError)  # ScanWriteError included
    if "torch" in sys.modules:  # a DeviceError or Cancelled can only come after torch was imported
        from ..devices import DeviceError
        from ..inference import Cancelled

        errors += [DeviceError, Cancelled]
    if "safetensors" in sys.modules:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    return tuple(errors)


def error_line(exc: BaseException) -> str:
    """``lggseg: error: <path>: <problem>`` in one line."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:  # a plain OSError from the OS
        msg = f"{exc.filename}: {exc.strerror}"
    else:
        msg = str(exc) or type(exc).__name__
    return f"{PROG}: error: " + " ".join(msg.split())


def run_command(func, args) -> int:
    """Run a command; an expected failure becomes one error line and exit code 2."""
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # ``lggseg models | head``: the reader has gone, say nothing
        _silence_stdout()
        return 141  # as a shell reports SIGPIPE
    except Exception as exc:
        if not isinstance(exc, _expected_errors()):
            raise  # a bug: keep its traceback
        print(error_line(exc), file=sys.stderr)
        return 2


def _silence_stdout() -> None:
    """Point stdout at devnull so Python's final flush does not fail again on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (captured output)
        pass


def warn(message: str) -> None:
    """A per-item error in a batch that goes on (same form as the final error line)."""
    print(f"{PROG}: error: " + " ".join(str(message).split()), file=sys.stderr)


@contextmanager
def warnings_as_lines():
    """Python warnings raised inside (``scan_io.LargeScanWarning``: said before a very large
    volume is read) print at once as ``lggseg: warning: ...`` lines, not as source excerpts."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{PROG}: warning: " + " ".join(str(message).split()), file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show  # catch_warnings puts the old one back
        yield


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


def print_table(rows: list[list[str]], header: list[str], out=None) -> None:
    out = out or sys.stdout
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


def fmt(v, spec: str = ".3f") -> str:
    return "" if v is None else format(v, spec)


def write_csv(path: Path, rows: list[dict], columns) -> None:
    """Write the whole table atomically: a full disk leaves the previous table (or none), never
    half of one, and no temporary file."""
    from ..atomic import staged_file

    path = Path(path)
    try:
        with staged_file(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(columns))
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in columns})
    except OSError as exc:
        raise CLIError(f"{path}: cannot write this table ({exc.strerror or exc})") from exc


# --------------------------------------------------------------------------- inputs


def patient_folders(paths) -> list[Path]:
    """Patient folders named on the command line; a kaggle_3m-style root gives all its patients."""
    from .. import lgg_io

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


LGG, SCAN = "lgg", "scan"


@dataclass(frozen=True)
class Case:
    """One thing to segment or score: an LGG patient folder (``kind`` LGG) or a scan case that
    :func:`cases.read_case` opens (``kind`` SCAN: a NIfTI or DICOM file or case folder).
    Both take the same path through segment and evaluate."""

    path: Path
    kind: str

    @property
    def name(self) -> str:
        """The patient / case id (a folder's name; a single file's id as cases gives it)."""
        if self.kind == SCAN and self.path.is_file():
            from .. import scan_io
            from ..cases import case_files

            try:
                return case_files(self.path).case_id
            except (scan_io.ScanFormatError, OSError):
                return self.path.name
        return self.path.name


def _cases_at(path: Path) -> list[Case]:
    """The cases one command-line path holds; CLIError when it holds none."""
    from .. import lgg_io
    from ..cases import find_cases

    if not path.exists():
        what = "file" if path.suffix else "folder"
        raise CLIError(f"{path}: no such {what}")
    if lgg_io.is_patient_folder(path):
        return [Case(path, LGG)]
    scans = find_cases(path)
    if scans == [path]:
        return [Case(path, SCAN)]
    found = [Case(p, LGG) for p in lgg_io.list_patients(path)] if path.is_dir() else []
    found += [Case(p, SCAN) for p in scans]
    if not found:
        raise CLIError(
            f"{path}: not an LGG patient folder (P/P_<n>.tif slices) or a folder of patient "
            "folders, nor a NIfTI case (.nii/.nii.gz files) or a folder of case folders"
        )
    return sorted(found, key=lambda c: c.path.name)


def find_inputs(paths) -> tuple[list[Case], list[str]]:
    """The cases named on the command line, in its order (a root's in name order, each once),
    and the inputs that hold none, each already said in one error line. Raises CLIError when
    no input holds a case (its last message; the others are printed first)."""
    cases: list[Case] = []
    errors: list[str] = []
    bad: list[str] = []
    for p in map(Path, paths):
        try:
            cases += _cases_at(p)
        except CLIError as exc:
            errors.append(str(exc))
            bad.append(str(p))
    if not cases:
        for message in errors[:-1]:
            warn(message)
        raise CLIError(errors[-1] if errors else "no inputs")
    for message in errors:
        warn(message)
    seen, unique = set(), []
    for c in cases:
        if c.path.resolve() not in seen:
            seen.add(c.path.resolve())
            unique.append(c)
    return unique, bad


def _ids_from_json(path: str, key: str | None) -> list[str]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CLIError(f"{path}: cannot read this JSON file ({exc})") from exc
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            keys = ", ".join(data) if isinstance(data, dict) else "none: it is not an object"
            raise CLIError(f"{path}: has no key {key!r} (keys: {keys})")
        data = data[key]
    if not isinstance(data, list) or not all(isinstance(i, str) for i in data):
        raise CLIError(f"{path}{':' + key if key else ''}: expected a list of patient ids")
    return data


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
            ids += _ids_from_json(path, key)
        elif path.endswith(".json"):
            raise CLIError(f"{path}: no such JSON file")
        else:
            ids.append(v)
    return ids


def select(items: list, ids: list[str] | None, where) -> list:
    """The patient folders or cases (both named by ``.name``) of the chosen ids, in the order
    given."""
    if ids is None:
        return items
    by_id = {item.name: item for item in items}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise CLIError(
            f"patient {unknown[0]} not found in {', '.join(map(str, where))}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
        )
    return [by_id[i] for i in dict.fromkeys(ids)]


# --------------------------------------------------------------------------- engine


def add_spacing_option(p, purpose: str = "") -> None:
    """``--spacing Z Y X``: the voxel size of LGG TIFF folders, which carry none."""
    p.add_argument(
        "--spacing",
        nargs=3,
        type=float,
        metavar=("Z", "Y", "X"),
        default=(1.0, 1.0, 1.0),
        help=f"voxel spacing in mm of LGG TIFF folders{', ' + purpose if purpose else ''} (they "
        "carry none; default 1 1 1); NIfTI cases always use their own",
    )


def check_spacing(args) -> None:
    if not all(math.isfinite(s) and s > 0 for s in args.spacing):
        raise CLIError(f"--spacing {' '.join(map(str, args.spacing))}: give three positive mm")


def add_engine_options(p, postprocess_help: str) -> None:
    """Model, device, post-processing, flips and batch size: shared by segment and evaluate."""
    p.add_argument(
        "--model", default=None, help="model name or folder (default: the shipped default)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] or mps (default: auto)")
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


def segmenter(args):
    from ..inference import Segmenter

    return Segmenter.from_store(
        args.model, device=args.device, batch_size=args.batch_size, tta=args.tta, fallback=False
    )


def card_postprocess(seg, chosen: str | None) -> str:
    """The post-processing a command runs with: ``--postprocess`` if given, else the card's."""
    if chosen:
        return chosen
    from .. import models
    from ..model_cards import card_postprocessing

    return card_postprocessing(models.get_model(seg.name).card).method
