"""The npe2 manifest is valid and importable, and importing the package stays light."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import napari_lggseg

MANIFEST = Path(napari_lggseg.__file__).with_name("napari.yaml")


def _npe2() -> list[str]:
    exe = shutil.which("npe2", path=str(Path(sys.executable).parent)) or shutil.which("npe2")
    if exe is None:
        pytest.skip("npe2 command not installed")
    return [exe]


def test_npe2_validate_with_imports():
    result = subprocess.run(
        [*_npe2(), "validate", "--imports", "napari-lggseg"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_manifest_contents():
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert manifest["name"] == "napari-lggseg"
    assert manifest["display_name"] == "LGG tumour segmentation"
    commands = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    assert all(cid.startswith("napari-lggseg.") for cid in commands)
    assert commands["napari-lggseg.make_segment_widget"] == "napari_lggseg._widgets:SegmentWidget"
    assert commands["napari-lggseg.make_finetune_widget"] == "napari_lggseg._widgets:FineTuneWidget"
    widgets = {w["command"]: w["display_name"] for w in manifest["contributions"]["widgets"]}
    assert widgets == {
        "napari-lggseg.make_segment_widget": "Segment tumour",
        "napari-lggseg.make_finetune_widget": "Fine-tune",
        "napari-lggseg.make_clicks_widget": "Click correction",
        "napari-lggseg.make_project_widget": "Annotation project",
    }
    assert commands["napari-lggseg.make_clicks_widget"] == "napari_lggseg._widgets:ClicksWidget"
    assert commands["napari-lggseg.make_project_widget"] == "napari_lggseg._widgets:ProjectWidget"
    menu = manifest["contributions"]["menus"]["napari/layers/segment"]
    assert {"command": "napari-lggseg.make_segment_widget"} in menu


def test_import_is_light():
    """napari starts fast and lists the plugin without loading torch or a Qt binding."""
    code = (
        "import sys, napari_lggseg, napari_lggseg.lgg_io, napari_lggseg._reader, "
        "napari_lggseg._writer, napari_lggseg._sample_data, napari_lggseg.synthetic\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'qtpy', 'napari'})\n"
        "print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
