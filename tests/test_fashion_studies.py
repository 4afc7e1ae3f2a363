"""The Fashion-MNIST studies (`make study NAME=...`, benchmarks/fashion_studies.py) are valid `compare` runs.

Training them takes up to 40 minutes each, so `make test` checks what can break without training: every
comparison of every study is a command line the generated project's `compare` accepts (recipes exist, no
two recipes of one exclusive kind, no arm touching the data split), and a changed definition gets a new
results folder instead of mixing with old runs."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
import sys

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def studies():
    spec = importlib.util.spec_from_file_location("fashion_studies_runner", REPO / "benchmarks" / "fashion_studies.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def comparisons(module):
    return [(study, comparison) for study in module.STUDIES.values() for comparison in study.comparisons]


def test_every_study_comparison_is_a_command_compare_accepts(studies, pkg, project, monkeypatch):
    command = importlib.import_module(f"{pkg.__name__}.compare.command")
    monkeypatch.chdir(project)
    for study, comparison in comparisons(studies):
        argv, root = studies.compare_argv(study, comparison, project, comparison.seeds, jobs=2)
        built, jobs = command.build_comparison(argv)
        assert jobs == 2 and built.units == comparison.seeds
        assert [arm.name for arm in built.arms] == ["baseline", *comparison.arms], study.name
        assert built.root == root and root.is_relative_to(REPO / "docs" / "studies" / study.name)
        for arm in built.arms:
            assert all(os.path.isfile(project / recipe) for recipe in arm.recipes), (study.name, arm)


def test_a_changed_definition_gets_its_own_results_folder(studies, project):
    study = studies.STUDIES["regularization"]
    comparison = study.comparisons[0]
    changed = copy.deepcopy(comparison.baseline)
    changed["trainer"]["max_epochs"] += 1
    _, root = studies.compare_argv(study, comparison, project, studies.FIRST_SEEDS, 1)
    _, other = studies.compare_argv(study, studies.Comparison(comparison.key, comparison.label, changed, comparison.arms),
                                    project, studies.FIRST_SEEDS, 1)
    assert root != other and root.parent == other.parent


def test_more_seeds_only_where_they_could_decide(studies):
    def row(verdict, low, high):
        return {"arm": "a", "metric": "test_acc", "verdict": verdict, "diff_ci_low": low, "diff_ci_high": high}

    assert studies.undecided([row("no detectable difference", "-0.01", "0.02")])
    # both arms at chance on every seed: a zero-width interval at 0 that two more seeds cannot move
    assert not studies.undecided([row("no detectable difference", "0.0", "0.0"), row("worse", "-0.3", "-0.1")])
    assert not studies.undecided([row("better", "0.01", "0.02")])


def test_the_page_reads_the_comparison_with_the_most_seeds_whatever_the_file_ages(studies, tmp_path):
    for name, seeds, accuracy in (("compare-five", [0, 1, 2, 3, 4], "0.9"), ("compare-three", [0, 1, 2], "0.8")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"units": seeds}))
        (folder / "results.csv").write_text(f"arm,metric,mean\nbaseline,test_acc,{accuracy}\n")
    os.utime(tmp_path / "compare-five" / "results.csv", (0, 0))  # the older file, as a checkout may leave it
    folder, rows = studies.read_results(tmp_path)
    assert folder.name == "compare-five" and rows[0]["mean"] == "0.9"
