"""Atomic writes: a folder or a file appears whole or not at all, and an existing one is kept
until its replacement is complete. Used by corrections, the model store, CSVs and masks.

Everything is first written under a hidden staging name beside its destination
(``.<name>.tmp-<pid>@<host>-<random>``), flushed to disk, then renamed into place. A process that
was killed leaves its staging behind; :func:`clean_stale` removes it the next time the folder is
used, once its process is gone or it is older than an hour.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STALE_AFTER_S = 3600.0
# names this machine in staging names, so a shared disk never judges another machine's pids
HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
# our staging names, with the process and machine that own them
_OWNED_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)@(?P<host>[0-9a-f]{6})-")
# staging names of earlier versions and of delete_model: owner unknown, judged by age only
_ANONYMOUS_RE = re.compile(r"^\..+\.(tmp(-[^.]+)?|deleting)$")


def _tag(name: str) -> str:
    return f".{name}.tmp-{os.getpid()}@{HOST_TAG}-"


def _fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries (POSIX only: Windows cannot open a folder)."""
    if path.is_dir() and os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY if path.is_dir() else os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def staged_folder(final: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; when the block ends without error, its files are flushed
    and it is renamed to ``final``.

    ``replace=False`` refuses an existing ``final`` (FileExistsError). ``replace=True`` swaps an
    existing one out whole and puts it back if the rename fails, so a reader never sees a mix of
    old and new files. On any error the staging folder is removed and ``final`` is as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final.parent)
    if final.exists() and not replace:
        raise FileExistsError(17, "already exists", str(final))
    staging = Path(tempfile.mkdtemp(prefix=_tag(final.name), dir=final.parent))
    backup = staging.with_name(staging.name + "-old")
    try:
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the folder from colleagues
        yield staging
        for f in staging.iterdir():
            if f.is_file():
                os.chmod(f, 0o644)
                _fsync_path(f)
        _fsync_path(staging)
        if final.exists():
            if not replace:
                raise FileExistsError(17, "already exists", str(final))
            os.replace(final, backup)
            try:
                os.replace(staging, final)
            except BaseException:
                _put_back(backup, final)
                raise
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, final)
        _fsync_path(final.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _put_back(backup: Path, final: Path) -> None:
    try:
        os.replace(backup, final)
    except OSError as exc:  # the old folder is safe under its backup name, which is never cleaned
        raise OSError(
            exc.errno, f"could not put the earlier folder back; it is kept as {backup}", str(final)
        ) from exc


@contextmanager
def staged_file(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` (same suffixes, so writers that go by the
    extension such as nibabel still work); when the block ends without error it replaces
    ``final``. On any error the temporary file is removed and ``final`` is as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final.parent)
    fd, name = tempfile.mkstemp(
        prefix=_tag(final.name), suffix="".join(final.suffixes), dir=final.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        _fsync_path(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(final: str | os.PathLike, text: str, newline: str | None = None) -> None:
    """Replace ``final`` with ``text`` atomically."""
    with staged_file(final) as tmp, open(tmp, "w", encoding="utf-8", newline=newline) as f:
        f.write(text)


def _owner_alive(pid: int, host: str) -> bool:
    if host != HOST_TAG:
        return True  # another machine's process (shared disk): only age tells
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else (PermissionError), or Windows quirks
        return True
    return True


def is_stale(path: Path, now: float | None = None, legacy: bool = False) -> bool:
    """A staging leftover whose process is gone, or older than an hour. ``legacy`` also counts
    staging names without an owner (earlier versions, ``.<name>.deleting``), by age only."""
    if path.name.endswith("-old"):
        return False  # a folder swapped out for a replacement that failed: real data, kept
    owned = _OWNED_RE.match(path.name)
    if not owned and not (legacy and _ANONYMOUS_RE.match(path.name)):
        return False
    try:
        age = (now or time.time()) - path.lstat().st_mtime
    except OSError:
        return False
    if age > STALE_AFTER_S:
        return True
    return bool(owned) and not _owner_alive(int(owned["pid"]), owned["host"])


def _restore_swapped_out(backup: Path) -> None:
    """A process killed between moving a folder aside and renaming its replacement in left the
    destination missing: put the earlier folder back (never delete it)."""
    owned = _OWNED_RE.match(backup.name)
    if not owned or _owner_alive(int(owned["pid"]), owned["host"]):
        return
    final = backup.with_name(owned["name"])
    try:
        if not final.exists():
            os.replace(backup, final)
    except OSError:
        pass


def clean_stale(folder: str | os.PathLike, legacy: bool = False) -> list[Path]:
    """Remove staging leftovers of killed processes in ``folder``; returns what was removed.
    ``legacy`` only in folders that are ours alone (the model store): elsewhere a hidden
    ``*.tmp`` may be someone else's. Never raises (a read-only folder is left as it is)."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    now = time.time()
    for p in entries:
        if p.name.startswith(".") and p.name.endswith("-old"):
            _restore_swapped_out(p)
        elif p.name.startswith(".") and is_stale(p, now, legacy):
            try:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed
