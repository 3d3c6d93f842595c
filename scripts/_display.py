"""Can a napari window open here? The test command and the demo ask before Qt is touched.

Without a display Qt does not raise, it aborts the whole process ("Fatal Python error:
Aborted"), so the question is asked of a throw-away child process. As a pytest plugin
(``pytest -p _display``, loaded by scripts/test.sh) it keeps the viewer tests from being imported
when no window can open and reports them as skipped, with one line saying what to install.
``LGGSEG_REQUIRE_DISPLAY=1`` (set by .ci/run) turns that skip into an error.

    python scripts/_display.py     # exit 0 when a window can open, else 1 and the reason
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGES_FILE = Path(__file__).with_name("debian-packages.txt")
VIEWER_TEST_DIR = "_qt"  # tests/_qt/: every test there opens a real napari viewer
QT_FIXTURES = {"qtbot", "qapp", "make_napari_viewer", "make_napari_viewer_proxy"}
_PROBE = (
    "from qtpy.QtWidgets import QApplication, QWidget\n"
    "app = QApplication([])\n"
    "w = QWidget(); w.show(); app.processEvents(); w.close()\n"
)


def debian_packages() -> list[str]:
    """The Debian packages a napari window needs under Xvfb (one list for test.sh and .ci/run)."""
    return PACKAGES_FILE.read_text().split()


def install_hint() -> str:
    return (
        "install a display server and Qt's libraries (Debian/Ubuntu: sudo apt-get install "
        + " ".join(debian_packages())
        + "), or run on a desktop"
    )


@functools.cache
def display_problem(timeout: float = 120) -> str | None:
    """None when a Qt window opens here; else why not, in a few words."""
    headless_qpa = os.environ.get("QT_QPA_PLATFORM", "").split(":")[0] in {"offscreen", "minimal"}
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if sys.platform.startswith("linux") and not (has_display or headless_qpa):
        xvfb = "Xvfb is on PATH but was not started" if shutil.which("Xvfb") else "no Xvfb on PATH"
        return f"no display ({xvfb}, DISPLAY is unset)"
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"Qt did not open a window within {timeout:.0f} s"
    if probe.returncode == 0:
        return None
    lines = [ln.strip() for ln in probe.stderr.splitlines() if ln.strip()]
    said = [ln for ln in lines if "qt.qpa" in ln] or [ln for ln in lines if "Qt" in ln] or lines
    return "Qt cannot open a window: " + (said[0] if said else f"exit {probe.returncode}")


if __name__ == "__main__":  # demo.sh asks here, before pytest (below) is imported
    problem = display_problem()
    if problem:
        print(f"{problem}; {install_hint()}", file=sys.stderr)
    sys.exit(1 if problem else 0)

# ----------------------------------------------------------------------------- the pytest plugin
import pytest  # noqa: E402


def _is_viewer_test_file(path: Path) -> bool:
    return VIEWER_TEST_DIR in path.parts[:-1] and path.name.startswith("test_")


def _skip_line(n_files: int, n_tests: int) -> str:
    what = ", ".join(
        f"{n} {noun}"
        for n, noun in ((n_files, "viewer test file(s)"), (n_tests, "test(s) needing Qt"))
        if n
    )
    return f"skipped {what}: {display_problem()}; to run them, {install_hint()}"


class _SkippedViewerTest(pytest.Item):
    """Stands for one viewer test file that was not imported (importing may start Qt)."""

    def runtest(self) -> None:  # never called: the item carries a skip marker
        raise AssertionError("a skipped viewer test ran")

    def reportinfo(self):
        return self.path, 0, f"{self.path.name} (not imported: no display)"


class _SkippedViewerFile(pytest.File):
    def collect(self):
        item = _SkippedViewerTest.from_parent(self, name="viewer tests")
        item.add_marker(pytest.mark.skip(reason=f"{display_problem()}; {install_hint()}"))
        yield item


@pytest.hookimpl(trylast=True)  # after pytest-xvfb has started Xvfb
def pytest_configure(config) -> None:
    if os.environ.get("LGGSEG_REQUIRE_DISPLAY") == "1" and display_problem():
        raise pytest.UsageError(
            f"LGGSEG_REQUIRE_DISPLAY=1 but {display_problem()}; {install_hint()}"
        )


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path: Path, parent):
    if _is_viewer_test_file(module_path) and display_problem():
        return _SkippedViewerFile.from_parent(parent, path=module_path)
    return None


def pytest_collection_modifyitems(config, items) -> None:
    """Tests elsewhere that ask for a Qt fixture are skipped the same way (no window, no abort)."""
    needing_qt = [
        item
        for item in items
        if not isinstance(item, _SkippedViewerTest)
        and QT_FIXTURES & set(getattr(item, "fixturenames", ()))
    ]
    config.stash[_skipped_files] = sum(isinstance(item, _SkippedViewerTest) for item in items)
    if needing_qt and display_problem():
        marker = pytest.mark.skip(reason=f"{display_problem()}; {install_hint()}")
        for item in needing_qt:
            item.add_marker(marker)
    config.stash[_skipped_tests] = len(needing_qt) if needing_qt and display_problem() else 0


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    n_files, n_tests = config.stash.get(_skipped_files, 0), config.stash.get(_skipped_tests, 0)
    if n_files or n_tests:
        terminalreporter.write_line(_skip_line(n_files, n_tests), yellow=True, bold=True)


_skipped_files = pytest.StashKey[int]()
_skipped_tests = pytest.StashKey[int]()
