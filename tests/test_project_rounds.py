"""A project's fine-tuning round (issue #19): the product's round on the project's done cases,
with the tiny model and synthetic patients (no viewer)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_lgg_patient

from napari_lggseg import models
from napari_lggseg.project import Project, ProjectError
from napari_lggseg.project_rounds import round_volumes, run_round

IDS = [f"TCGA_SY_000{i}_20000101" for i in range(1, 5)]


@pytest.fixture
def project(tmp_path, tiny_model_store):
    root = tmp_path / "data"
    for seed, pid in enumerate(IDS, start=11):
        write_lgg_patient(root, pid, n=10, size=64, seed=seed, synthetic=True)
    proj = Project.create(root, tmp_path / "my project")
    proj.use_model(tiny_model_store)
    yield proj
    proj.close(force=True)


def _expert_done(proj: Project, case_id: str) -> np.ndarray:
    """The case marked done with its expert mask as the correction."""
    mask = proj.load_case(case_id).expert_mask
    proj.done(case_id, (mask > 0).astype(np.uint8))
    return mask


def _weights(name: str) -> dict:
    from safetensors.torch import load_file

    info = models.get_model(name)
    return load_file(str(info.path / models.WEIGHTS))


def test_round_learns_from_done_cases_and_becomes_current(project, tiny_model_store):
    for case_id in IDS[:2]:
        _expert_done(project, case_id)
    project.save_edit(IDS[2], np.zeros((10, 64, 64), np.uint8), reviewed_slices=[0])  # not done
    events = []
    r = run_round(project, minutes=0.05, progress=events.append)

    assert r is not None and r.trained_on == IDS[:2] and r.parent == tiny_model_store
    assert r.model.startswith("my-project-r1")
    assert project.current_model == r.model and project.rounds[-1] == r
    info = models.get_model(r.model)
    assert info.card["parent"] == tiny_model_store and info.card["round"] == 1
    assert sorted(info.card["training_data"]["patients"]) == IDS[:2]
    assert any(e["kind"] == "step" for e in events)
    before, after = _weights(tiny_model_store), _weights(r.model)
    assert any(not np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)
    # the cases not opened yet are to be predicted again with the new model
    assert set(project.cases_to_repredict()) == {IDS[3]}
    # the round survives reopening the project
    folder = project.folder
    project.close()
    with Project.open(folder) as again:
        assert again.current_model == r.model and again.rounds[-1].trained_on == IDS[:2]


def test_second_round_starts_from_the_first(project, tiny_model_store):
    _expert_done(project, IDS[0])
    first = run_round(project, minutes=0.02)
    _expert_done(project, IDS[1])
    second = run_round(project, minutes=0.02)
    assert second.parent == first.model and second.model.startswith("my-project-r2")
    assert second.trained_on == IDS[:2]
    assert models.get_model(first.model)  # the parent is kept


def test_cancelled_round_records_and_saves_nothing(project):
    _expert_done(project, IDS[0])
    before = {i.name for i in models.list_models(unusable=True)}
    assert run_round(project, minutes=0.05, cancel=lambda: True) is None
    assert project.rounds == [] and project.done_count_since_last_round == 1
    assert {i.name for i in models.list_models(unusable=True)} == before


def test_round_without_done_cases_says_so(project):
    with pytest.raises(ProjectError, match="no done case"):
        run_round(project)


def test_round_volumes_use_only_reviewed_slices_until_done(project):
    mask = _expert_done(project, IDS[0])
    project.save_edit(IDS[1], np.ones((10, 64, 64), np.uint8), reviewed_slices=[2, 5])
    done, partial = round_volumes(project, IDS[:2])
    assert done.labelled is None and np.array_equal(done.mask > 0, mask > 0)
    assert list(partial.labelled_slices) == [2, 5] and partial.source == "corrections"
