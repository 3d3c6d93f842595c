"""Atomic writes: a folder or file appears whole or not at all, an existing one survives a failed
replacement, and what a killed process left behind is cleaned once that process is gone."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tree_hashes

from napari_lggseg import atomic

KILLED_WHILE_WRITING = """
import os, sys
from pathlib import Path
from napari_lggseg.atomic import staged_file, staged_folder
target = Path(sys.argv[1])
with staged_folder(target / "model") as s, staged_file(target / "table.csv") as f:
    (s / "weights").write_bytes(b"half of it")
    f.write_text("patient,dice")
    os.kill(os.getpid(), 9)
"""


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_new_folder_appears_whole(tmp_path):
    final = tmp_path / "model"
    with atomic.staged_folder(final) as staging:
        assert staging.parent == tmp_path and not final.exists()
        (staging / "a.txt").write_text("a")
        (staging / "b.bin").write_bytes(b"b")
    assert sorted(p.name for p in final.iterdir()) == ["a.txt", "b.bin"]
    assert final.stat().st_mode & 0o777 == 0o755  # readable by colleagues, unlike mkdtemp's 0700
    assert (final / "a.txt").stat().st_mode & 0o777 == 0o644
    assert _hidden(tmp_path) == []


def test_a_failure_inside_leaves_nothing_and_keeps_the_old_folder(tmp_path):
    final = tmp_path / "corrections"
    final.mkdir()
    (final / "mask.tif").write_text("the person's work")
    before = tree_hashes(tmp_path)
    crash = pytest.raises(RuntimeError, match="crash")
    with crash, atomic.staged_folder(final, replace=True) as staging:
        (staging / "mask.tif").write_text("new")
        raise RuntimeError("crash while writing")
    assert tree_hashes(tmp_path) == before and _hidden(tmp_path) == []


def test_an_existing_folder_is_refused_or_swapped_whole(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(FileExistsError), atomic.staged_folder(final) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    with atomic.staged_folder(final, replace=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert _hidden(tmp_path) == []


def test_a_failed_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    final = tmp_path / "corrections"
    final.mkdir()
    (final / "mask.tif").write_text("old")
    before = tree_hashes(tmp_path)
    real_replace = os.replace

    def full_disk(src, dst):
        if ".tmp-" in Path(src).name and not Path(src).name.endswith("-old"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    no_space = pytest.raises(OSError, match="No space left")
    with no_space, atomic.staged_folder(final, replace=True) as staging:
        (staging / "mask.tif").write_text("new")
    assert tree_hashes(tmp_path) == before and _hidden(tmp_path) == []


def test_a_file_is_replaced_whole_and_keeps_its_suffixes(tmp_path):
    final = tmp_path / "mask.nii.gz"
    final.write_bytes(b"old")
    with atomic.staged_file(final) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path  # nibabel goes by suffix
        tmp.write_bytes(b"new")
        assert final.read_bytes() == b"old"
    assert final.read_bytes() == b"new" and _hidden(tmp_path) == []
    atomic.write_text(tmp_path / "table.csv", "a,b\n")
    assert (tmp_path / "table.csv").read_text() == "a,b\n"


def test_a_full_disk_while_writing_a_file_leaves_the_old_one_and_no_tmp(tmp_path):
    final = tmp_path / "segmentation.csv"
    final.write_text("previous table")
    with pytest.raises(OSError, match="No space left"), atomic.staged_file(final) as tmp:
        tmp.write_text("half a ta")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert final.read_text() == "previous table" and _hidden(tmp_path) == []


def test_leftovers_of_a_killed_process_are_cleaned(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILLED_WHILE_WRITING, str(tmp_path)], timeout=60)
    assert proc.returncode != 0
    left = _hidden(tmp_path)
    assert len(left) == 2 and not (tmp_path / "model").exists(), left
    removed = atomic.clean_stale(tmp_path)
    assert sorted(p.name for p in removed) == left and _hidden(tmp_path) == []


def test_staging_of_a_live_process_is_kept_until_an_hour_old(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = atomic.HOST_TAG
        theirs = tmp_path / f".model.tmp-{sleeper.pid}@{host}-abc123"
        ours = tmp_path / f".model.tmp-{os.getpid()}@{host}-def456"
        other_machine = tmp_path / ".model.tmp-1@000000-ghi789"
        for p in (theirs, ours, other_machine):
            p.mkdir()
        assert atomic.clean_stale(tmp_path) == []
        two_hours_ago = time.time() - 7200
        os.utime(theirs, (two_hours_ago, two_hours_ago))
        os.utime(other_machine, (two_hours_ago, two_hours_ago))
        assert sorted(atomic.clean_stale(tmp_path)) == sorted([theirs, other_machine])
        assert _hidden(tmp_path) == [ours.name]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_names_without_an_owner_are_cleaned_only_where_asked(tmp_path):
    """Hidden ``*.tmp`` files in a user's own folder may be someone else's: only the model store
    (``legacy=True``) removes old staging names of earlier versions, and only once an hour old."""
    earlier = tmp_path / ".mine.tmp-k2j4h1x0"
    deleting = tmp_path / ".gone.deleting"
    recent = tmp_path / ".fresh.tmp-p0q9r8s7"
    for p in (earlier, deleting, recent):
        p.mkdir()
    (tmp_path / ".bashrc").write_text("not ours")
    two_hours_ago = time.time() - 7200
    for p in (earlier, deleting, tmp_path / ".bashrc"):
        os.utime(p, (two_hours_ago, two_hours_ago))
    assert atomic.clean_stale(tmp_path) == []
    assert sorted(atomic.clean_stale(tmp_path, legacy=True)) == sorted([earlier, deleting])
    assert _hidden(tmp_path) == [".bashrc", recent.name]


def test_cleaning_a_folder_that_is_not_there_never_raises(tmp_path):
    assert atomic.clean_stale(tmp_path / "missing") == []


def test_a_folder_swapped_out_by_a_failed_replacement_is_never_cleaned(tmp_path):
    """``-old`` is an earlier folder moved aside; if putting it back failed it holds real data."""
    backup = tmp_path / f".corrections.tmp-1@{atomic.HOST_TAG}-abc123-old"
    backup.mkdir()
    two_hours_ago = time.time() - 7200
    os.utime(backup, (two_hours_ago, two_hours_ago))
    assert atomic.clean_stale(tmp_path, legacy=True) == [] and backup.is_dir()


def test_a_folder_swapped_out_by_a_killed_process_is_put_back(tmp_path):
    """Killed between moving the earlier corrections aside and renaming the new ones in: the
    next use of the folder puts the earlier ones back."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    backup = tmp_path / f".corrections.tmp-{pid}@{atomic.HOST_TAG}-abc123-old"
    backup.mkdir()
    (backup / "mask.tif").write_text("the person's work")
    atomic.clean_stale(tmp_path)
    assert (tmp_path / "corrections" / "mask.tif").read_text() == "the person's work"
    assert _hidden(tmp_path) == []
