"""The generated project end to end: its own tests, the installed commands, DDP on 2 CPU processes."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import yaml

from conftest import TEST_PACKAGE, offline_env, run

QUICK = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_generated_project_tests_pass(project, home):
    """The generated project's own suite: every recipe under fast_dev_run, fit/test/resume, two fits, W&B offline."""
    result = run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=project, env=offline_env(home))
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
    assert "W&B offline" in fit.stdout and "wandb sync" in fit.stdout
    test = run([str(bin_dir / "lightning"), "test", config, "--ckpt_path=best", "--trainer.enable_progress_bar=false"],
               cwd=work, env=env)
    assert "test/acc" in test.stdout
    for command in ([str(bin_dir / project.name)], [str(bin_dir / "python"), "-m", TEST_PACKAGE]):
        assert "fit" in run([*command, "--help"], cwd=work, env=env).stdout
