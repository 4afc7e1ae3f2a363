"""The generated project end to end: its own tests, the installed commands, DDP on 2 CPU processes."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from conftest import TEST_ANSWERS, TEST_PACKAGE, generate, offline_env, run

QUICK = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def requirement_closure(requirements: list[str]) -> set[str]:
    """The distributions a `pip install` of `requirements` puts in an environment (names normalized),
    read from this environment's metadata: each requirement, its extras, and theirs, recursively."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: dict[str, set[str]] = {}
    pending = [Requirement(r) for r in requirements]
    while pending:
        requirement = pending.pop()
        name, extras = canonicalize_name(requirement.name), set(requirement.extras)
        if name in seen and extras <= seen[name]:
            continue
        seen[name] = seen.get(name, set()) | extras
        for line in metadata.distribution(name).requires or []:
            dependency = Requirement(line)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in ["", *seen[name]]):
                pending.append(dependency)
    return set(seen)


def user_environment(project: Path, path: Path) -> Path:
    """A new virtual environment holding exactly what `pip install -e ".[test]"` gives a user of
    `project` (its declared dependencies and the test extra, plus pip and setuptools), with the
    project installed in it; returns its bin folder.

    It is built from this environment's installed files (a folder of links to the distributions of
    the requirement closure), not downloaded again: torch alone is a 5 GB install. A package the
    template's dev environment has but the project does not declare (tensorboard, cookiecutter) is
    not there, as on a user's machine."""
    from importlib import metadata

    pyproject = (project / "pyproject.toml").read_text()
    declared = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.MULTILINE | re.DOTALL).group(1)
    test_extra = re.search(r"^test = \[(.*?)\]", pyproject, re.MULTILINE).group(1)
    requirements = re.findall(r'"([^"]+)"', declared + test_extra) + ["pip", "setuptools"]
    view = path / "packages"
    view.mkdir(parents=True)
    site = Path(sysconfig.get_paths()["purelib"])
    for name in requirement_closure(requirements):
        for top in {file.parts[0] for file in metadata.distribution(name).files or [] if file.parts[0] != ".."}:
            if (site / top).exists() and not (view / top).exists():
                (view / top).symlink_to(site / top)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path / "venv")], check=True)
    (venv_site,) = (path / "venv").glob("lib/python*/site-packages")
    (venv_site / "_user_packages.pth").write_text(f"{view}\n")
    bin_dir = path / "venv" / "bin"
    run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--no-index", "--no-build-isolation", "-e", str(project)],
        cwd=project, env=offline_env(path))
    return bin_dir


@pytest.mark.parametrize("answers", [{}, {"logger": "csv"}], ids=["default", "logger=csv"])
def test_generated_project_suite_passes_where_only_its_readme_install_ran(tmp_path, answers):
    """The generated project's own suite (every recipe under fast_dev_run, fit/test/resume, two fits,
    W&B offline) in an environment with only what its README installs: `pip install -e ".[test]"`."""
    project = generate(tmp_path / "out", **TEST_ANSWERS, **answers)
    bin_dir = user_environment(project, tmp_path / "user")
    missing = subprocess.run([str(bin_dir / "python"), "-c", "import tensorboard"], capture_output=True)
    assert missing.returncode != 0, "the user environment has a package the project does not declare"
    (tmp_path / "home").mkdir()
    result = run([str(bin_dir / "python"), "-m", "pytest", "-p", "no:cacheprovider"], cwd=project,
                 env=offline_env(tmp_path / "home"), timeout=900)
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= 14 and "failed" not in result.stdout.splitlines()[-1]


def test_ddp_with_two_cpu_processes(project, home, tmp_path):
    cmd = [sys.executable, "-m", TEST_PACKAGE, "fit", f"--config={project / 'configs/default.yaml'}",
           f"--config={project / 'recipes/trainer/ddp.yaml'}", f"--config={project / 'recipes/logger/csv.yaml'}",
           "--trainer.accelerator=cpu", "--trainer.devices=2", *QUICK]
    result = run(cmd, cwd=tmp_path, env=offline_env(home, project))
    output = result.stdout + result.stderr
    assert "distributed_backend=gloo" in output and "All distributed processes registered. Starting with 2 processes" in output
    (config,) = tmp_path.glob("runs/lightning_logs/version_*/config.yaml")
    saved = yaml.safe_load(config.read_text())
    assert saved["trainer"]["strategy"] == "ddp" and str(saved["trainer"]["devices"]) == "2"
    assert (config.parent / "checkpoints" / "last.ckpt").is_file()
    assert len(list(tmp_path.glob("runs/lightning_logs/version_*"))) == 1  # one run, not one per rank


def make_venv_on_top_of_ours(path: Path) -> Path:
    """A fresh venv that sees this environment's packages: `pip install -e .` then needs no download."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)  # pip, setuptools: ours
    (site,) = path.glob("lib/python*/site-packages")
    (site / "_parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return path / "bin"


def test_pip_install_gives_the_lightning_and_project_commands(project, home, tmp_path):
    bin_dir = make_venv_on_top_of_ours(tmp_path / "venv")
    env = offline_env(home)
    run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--no-build-isolation", "-e", str(project)],
        cwd=project, env=env)
    work = tmp_path / "work"
    work.mkdir()
    config = f"--config={project / 'configs/default.yaml'}"
    fit = run([str(bin_dir / "lightning"), "fit", config, *QUICK], cwd=work, env=env)
    assert "W&B offline" in fit.stderr and "wandb sync" in fit.stderr  # an info line of the rank-zero logger
    test = run([str(bin_dir / "lightning"), "test", config, "--ckpt_path=best", "--trainer.enable_progress_bar=false"],
               cwd=work, env=env)
    assert "test/acc" in test.stdout
    for command in ([str(bin_dir / project.name)], [str(bin_dir / "python"), "-m", TEST_PACKAGE]):
        assert "fit" in run([*command, "--help"], cwd=work, env=env).stdout


def test_lightning_of_another_installed_project_stops_naming_both(tmp_path):
    """Two generated projects in one environment: `lightning` belongs to the one installed last and
    refuses the other's folder and config, naming the command that runs it."""
    first = generate(tmp_path / "a", project_name="First Net")
    second = generate(tmp_path / "b", project_name="Second Net")
    bin_dir = make_venv_on_top_of_ours(tmp_path / "venv")
    env = offline_env(tmp_path)
    for project in (first, second):
        run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps", "-e",
             str(project)], cwd=project, env=env)
    refused = subprocess.run([str(bin_dir / "lightning"), "fit", "--config", "configs/default.yaml", "--print_config"],
                             cwd=first, env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "runs the project of package 'second_net'" in refused.stderr and "of package 'first_net'" in refused.stderr
    assert "python -m first_net fit" in refused.stderr
    from_elsewhere = subprocess.run([str(bin_dir / "lightning"), "fit", f"--config={first / 'configs/default.yaml'}",
                                     "--print_config"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert from_elsewhere.returncode == 1 and "first_net" in from_elsewhere.stderr
    own = run([str(bin_dir / "lightning"), "fit", "--config", "configs/default.yaml", "--print_config"], cwd=second, env=env)
    assert "second_net" in own.stdout or "class_path: AutoWandbLogger" in own.stdout
