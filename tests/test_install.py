"""The real install, as the README gives it: the wheel built from this tree goes into a brand-new
venv after torch (scripts/install_torch.sh, as the scripts do) together with napari and a Qt
binding, which the plugin does not declare. npe2 must find the plugin with every contribution of
its manifest, and ``lggseg segment`` from that venv must segment a synthetic patient with the
shipped model. Every dependency resolves (``--no-deps`` only to build the wheel). Skipped when no
package index answers (offline without a local index)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tifffile
import yaml
from conftest import REPO_ROOT

from napari_lggseg.synthetic import make_synthetic_patient

pytestmark = pytest.mark.slow
# napari's smallest Qt extra; the README's "napari[all]" adds napari's optional extras (numba,
# zarr, ...), which the plugin does not use, for about a minute more here
NAPARI = "napari[pyqt6]"
PIP_ENV = {**os.environ, "PIP_NO_COMPILE": "1"}  # no .pyc for torch's thousands of modules
PATIENT = "SYNTH_0007"
CONTRIBUTIONS = ("readers", "writers", "sample_data", "widgets")
DISCOVER = """
import json, npe2
pm = npe2.PluginManager.instance()
pm.discover()
m = pm.get_manifest("napari-lggseg")
c = m.contributions
print(json.dumps({
    "display_name": m.display_name,
    "icon": m.icon,
    "commands": sorted(x.id for x in c.commands or []),
    "readers": [r.command for r in c.readers or []],
    "writers": [w.command for w in c.writers or []],
    "sample_data": [s.key for s in c.sample_data or []],
    "widgets": [w.display_name for w in c.widgets or []],
}))
"""


def _run(cmd: list[str], timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(cmd)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def _index_answers() -> bool:
    """Can pip resolve a package at all here (a reachable index or local wheels)?"""
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed"]
        + ["--quiet", "--timeout", "5", "--retries", "0", "setuptools>=77"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return probe.returncode == 0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of this tree, built from a copy so the working tree gets no build/ or egg-info."""
    if not _index_answers():
        pytest.skip("no package index answers (offline, no local wheels): cannot build or install")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO_ROOT / name, src / name)
    shutil.copytree(
        REPO_ROOT / "src",
        src / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)])
    (built,) = dist.glob("napari_lggseg-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A brand-new venv: torch first, then the wheel and napari with a Qt binding."""
    root = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", str(root)])
    py = root / ("Scripts" if os.name == "nt" else "bin") / "python"
    _run(["bash", str(REPO_ROOT / "scripts" / "install_torch.sh"), str(py)], env=PIP_ENV)
    _run([str(py), "-m", "pip", "install", "-q", str(wheel), NAPARI], env=PIP_ENV)
    return py


def test_wheel_ships_manifest_icon_and_weights(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("napari.yaml", "icon.png", "weights/lgg-fast/model.safetensors"):
        assert f"napari_lggseg/{shipped}" in names, sorted(names)


def test_npe2_discovers_every_contribution(wheel, venv):
    found = json.loads(_run([str(venv), "-c", DISCOVER], cwd=venv.parent).stdout.splitlines()[-1])
    manifest = yaml.safe_load(zipfile.ZipFile(wheel).read("napari_lggseg/napari.yaml"))
    declared = manifest["contributions"]
    assert found["display_name"] == manifest["display_name"]
    assert found["icon"] == manifest["icon"]
    assert found["commands"] == sorted(c["id"] for c in declared["commands"])
    for kind in CONTRIBUTIONS:
        assert len(found[kind]) == len(declared[kind]) > 0, (kind, found[kind])
    # every command's python_name imports in the new venv (napari and Qt resolved, no display needed)
    npe2 = venv.parent / ("npe2.exe" if os.name == "nt" else "npe2")
    out = _run([str(npe2), "validate", "--imports", "napari-lggseg"]).stdout
    assert "valid" in out


def _write_patient(root: Path) -> Path:
    image, mask = make_synthetic_patient(seed=7, n_slices=12, size=128)
    folder = root / PATIENT
    folder.mkdir(parents=True)
    for i, (img, m) in enumerate(zip(image, mask), 1):
        tifffile.imwrite(folder / f"{PATIENT}_{i}.tif", img, photometric="rgb")
        tifffile.imwrite(folder / f"{PATIENT}_{i}_mask.tif", m * 255)
    return folder


def test_lggseg_segment_from_the_new_venv(venv, tmp_path):
    patient = _write_patient(tmp_path / "data")
    out = tmp_path / "predictions"
    lggseg = venv.parent / ("lggseg.exe" if os.name == "nt" else "lggseg")
    env = {**os.environ, "LGGSEG_MODEL_DIR": str(tmp_path / "store")}  # the shipped model only
    env.pop("PYTHONPATH", None)
    cmd = [str(lggseg), "segment", str(patient), "--out", str(out), "--device", "cpu"]
    _run(cmd, env=env, cwd=tmp_path)
    with open(out / "segmentation.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["patient"] == PATIENT
    masks = sorted((out / PATIENT).glob(f"{PATIENT}_*_mask.tif"))
    assert len(masks) == 12
    assert int(row["tumour_voxels"]) > 0, row
