"""The on-disk half of an annotation project: project file, lock, stored predictions, and one small
adapter per case format. No Qt, no torch.

:mod:`napari_lggseg.project` holds the worklist logic on top of these. Everything here writes only
inside the project folder, and every write is a rename of a finished file or folder, so a kill
leaves the previous version whole.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import json
import os
import shutil
import socket
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

PROJECT_FILE = "lggseg_project.json"
LOCK_FILE = ".lggseg_project.lock"
PROJECT_FORMAT = "napari-lggseg project"
PROJECT_VERSION = 1


class ProjectError(Exception):
    """A project problem; the message names the file or folder and what is wrong, in words."""


class ProjectFormatError(ProjectError):
    """The project file is missing, damaged or from a newer version."""


class ProjectWriteError(ProjectError):
    """The project folder cannot be written (read-only, full); nothing already saved was changed."""


class ProjectLockedError(ProjectError):
    """Another live process holds the project; ``holder`` says who."""

    def __init__(self, message: str, holder: LockHolder | None = None):
        super().__init__(message)
        self.holder = holder


class CaseReadError(ProjectError):
    """One case could not be read; the project marks it and goes on with the others."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def describe_os_error(exc: BaseException) -> str:
    """'read-only' / 'full' / the OS's words, looking through wrapped errors (LGGWriteError)."""
    while exc is not None:
        code = getattr(exc, "errno", None)
        if code in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"the folder is read-only or not yours ({os.strerror(code)})"
        if code in (errno.ENOSPC, errno.EDQUOT):
            return f"the disk is full ({os.strerror(code)})"
        if exc.__cause__ is None:
            return getattr(exc, "strerror", None) or str(exc)
        exc = exc.__cause__
    return "unknown error"


def write_error(folder: Path, what: str, exc: BaseException, kept: bool = False):
    """The one message for a failed write: which folder, what, why; and that the edit is kept."""
    tail = "; the edit is kept in memory and saved as soon as the folder can be written"
    return ProjectWriteError(
        f"{folder}: cannot {what}: {describe_os_error(exc)}{tail if kept else ''}"
    )


# --------------------------------------------------------------------------- atomic files


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` through a staged file and a rename (:mod:`atomic`), so
    readers, and a process killed mid-write, see the old file or the new one, never a mix."""
    from .atomic import staged_file

    with staged_file(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: Path, obj) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=2).encode())


def read_project_file(folder: Path) -> dict:
    """The project file's contents, checked for format and version."""
    path = Path(folder) / PROJECT_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProjectFormatError(
            f"{folder}: not an annotation project (no {PROJECT_FILE}); create one first"
        ) from None
    except (OSError, ValueError) as exc:
        raise ProjectFormatError(f"{path}: cannot read the project file ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != PROJECT_FORMAT:
        raise ProjectFormatError(f"{path}: not a napari-lggseg project file")
    version = state.get("version")
    if not isinstance(version, int) or version > PROJECT_VERSION:
        raise ProjectFormatError(
            f"{path}: project file version {version!r} is newer than this napari-lggseg reads "
            f"(version {PROJECT_VERSION}); update napari-lggseg"
        )
    return state


def recover_interrupted_swap(parent: Path, name: str) -> None:
    """Undo a folder swap a kill interrupted: the writer renames the old folder to
    ``.<name>.tmp-*-old`` before renaming the new one in. If ``name`` is gone, the old one goes
    back; leftover staging folders are removed."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    leftovers = sorted(p for p in parent.glob(f".{name}.tmp-*") if p.is_dir())
    target = parent / name
    for old in (p for p in leftovers if p.name.endswith("-old")):
        if not target.exists():
            os.replace(old, target)
    for p in leftovers:
        if p.exists():
            shutil.rmtree(p, ignore_errors=True)


# --------------------------------------------------------------------------- lock


@dataclass(frozen=True)
class LockHolder:
    """Who holds a project open: enough to name them and to tell a crashed holder from a live one."""

    pid: int
    host: str
    user: str
    since: str
    token: str
    started: str | None = None  # the process's start time (Linux), so a reused pid is not "alive"

    def describe(self) -> str:
        return f"{self.user} on {self.host} (process {self.pid}, since {self.since})"


def _process_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks from /proc, None where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else fields[19]  # a zombie is dead for our purpose


def _pid_alive(holder: LockHolder) -> bool:
    if holder.pid <= 0:  # an unreadable lock (and never signal -1 or 0: process groups)
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    if Path("/proc").is_dir():
        started = _process_start(holder.pid)
        if started is None:
            return False
        return holder.started is None or holder.started == started
    return True


def may_take_over(holder: LockHolder | None) -> bool:
    """Whether a person may be offered to break ``holder``'s lock: only when this machine cannot
    tell that its process is alive (it runs on another host). A dead holder on this host needs no
    offer, :func:`acquire_lock` takes its lock over; a live one on this host keeps it."""
    return holder is not None and holder.host != socket.gethostname()


def read_lock(folder: Path) -> LockHolder | None:
    """The lock's holder, None when there is no lock. Locks are never written in part, so an
    unreadable one is damaged: it reads as a dead holder on this host, to be taken over."""
    path = Path(folder) / LOCK_FILE
    try:
        raw = json.loads(path.read_text())
        return LockHolder(**raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return LockHolder(0, socket.gethostname(), "unknown", "?", "unreadable")


def _new_holder() -> LockHolder:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    pid = os.getpid()
    return LockHolder(
        pid, socket.gethostname(), user, now_iso(), uuid.uuid4().hex, _process_start(pid)
    )


def acquire_lock(folder: Path, take_over: bool = False) -> LockHolder:
    """Take the project's lock or raise ProjectLockedError naming the live holder. A lock left by
    a process that died on this host is taken over; ``take_over`` breaks any lock (the person said
    the other holder is gone, e.g. on another machine). A folder where the lock cannot be written
    raises ProjectWriteError."""
    try:
        return _acquire_lock(Path(folder), take_over)
    except OSError as exc:
        raise write_error(folder, "open the project (writing its lock)", exc) from exc


def _acquire_lock(folder: Path, take_over: bool) -> LockHolder:
    path = folder / LOCK_FILE
    me = _new_holder()
    data = json.dumps(me.__dict__, indent=2).encode()
    for _attempt in range(3):
        if _create_exclusive(path, data):
            return me
        holder = read_lock(folder)
        if holder is None:
            continue  # released meanwhile
        stale = holder.host == me.host and not _pid_alive(holder)
        if not (stale or take_over):
            where = "in this napari" if holder.pid == me.pid and holder.host == me.host else ""
            raise ProjectLockedError(
                f"{folder}: this project is open {where or 'elsewhere'}: held by "
                f"{holder.describe()}. Close it there first (or, if that process is gone on "
                "another machine, open with take-over).",
                holder,
            )
        write_bytes_atomic(path, data)
        if (read_lock(folder) or holder).token == me.token:
            return me
    raise ProjectLockedError(f"{path}: another process keeps taking this project's lock")


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` only if it does not exist; never leaves a half-written
    lock (the content is written first, then hard-linked into place)."""
    fd, tmp = tempfile.mkstemp(prefix=".lock.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:  # no hard links on this file system
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
        try:
            fd2 = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd2, "wb") as fh:
            fh.write(data)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def release_lock(folder: Path, holder: LockHolder) -> None:
    """Remove the lock if it is still ``holder``'s (someone may have taken it over)."""
    current = read_lock(folder)
    if current is not None and current.token == holder.token:
        with contextlib.suppress(OSError):  # left behind, it reads as stale once we are gone
            (Path(folder) / LOCK_FILE).unlink()


# --------------------------------------------------------------------------- predictions


@dataclass
class StoredPrediction:
    """A model's prediction of one case as kept in the project folder."""

    mask: np.ndarray  # (Z, H, W) uint8 0/1, post-processed as the segmenter chose
    prob_u8: np.ndarray  # (Z, H, W) uint8: round(255 * p); >= 128 is exactly p >= 0.5
    slice_uncertainty: np.ndarray  # (Z,) expected wrongly labelled voxels per slice
    model: str
    threshold: float = 0.5
    postprocess: str = "min-size"
    created: str = ""

    @property
    def prob(self) -> np.ndarray:
        return self.prob_u8.astype(np.float32) / 255.0

    @property
    def uncertainty(self) -> float:
        """The case's score: expected wrongly labelled voxels over the whole volume."""
        return float(np.sum(self.slice_uncertainty))


def save_prediction(path: Path, pred: StoredPrediction) -> None:
    from .atomic import staged_file

    meta = {k: getattr(pred, k) for k in ("model", "threshold", "postprocess", "created")}
    with staged_file(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            mask=pred.mask.astype(np.uint8),
            prob_u8=pred.prob_u8,
            slice_uncertainty=pred.slice_uncertainty.astype(np.float32),
            meta=np.array(json.dumps(meta)),
        )


def load_prediction(path: Path) -> StoredPrediction:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return StoredPrediction(z["mask"], z["prob_u8"], z["slice_uncertainty"], **meta)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CaseReadError(f"{path}: cannot read the stored prediction ({exc})") from exc


# --------------------------------------------------------------------------- the case table

ORDERS = ("listed", "uncertain")
STATUSES = ("new", "predicted", "in review", "done")
NOT_OPENED = ("new", "predicted")  # statuses of a case nobody has opened yet


def check_order(order: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}: choose one of {ORDERS}")


@dataclass
class CaseRecord:
    """One row of the case table. ``dice`` (prediction vs expert mask) is kept but shown only
    when asked, so an annotator is not biased."""

    case_id: str
    status: str = "new"
    model: str | None = None  # the model whose prediction the person starts from
    uncertainty: float | None = None  # expected wrongly labelled voxels (uncertainty.py)
    volume_voxels: int | None = None  # of the latest mask: the edit, else the prediction
    volume_ml: float | None = None  # None where the voxel size is unknown
    dice: float | None = None
    has_expert: bool = False
    last_edited: str | None = None
    error: str | None = None  # why the case could not be read; the rest go on
    spacing: list[float] | None = None
    shape: list[int] | None = None  # (Z, H, W) once read: a mask of another shape is refused
    missing: bool = False  # not stored: the source no longer has this case
    pending: bool = False  # not stored: an edit waits in memory to be written

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("missing")
        d.pop("pending")
        return d


@dataclass
class Settings:
    order: str = "listed"
    show_dice: bool = False
    spacing: list[float] | None = None  # voxel size (z, y, x mm) for formats without one (LGG)
    round_every: int = 3  # a fine-tuning round after every k done cases; 0 = off (#19)


@dataclass
class Round:
    """A fine-tuning round of the project (#19): the model it made and the cases it learnt from."""

    model: str
    parent: str | None
    trained_on: list[str]
    created: str = field(default_factory=now_iso)
