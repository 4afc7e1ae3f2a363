"""Helpers shared by the template's tests: generate projects, run their CLI, keep W&B offline.

The tiny nets, data and quiet Trainers of the effect tests are in tiny.py (`from tiny import ...`)."""

from __future__ import annotations

import importlib
import os
import random
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from cookiecutter.main import cookiecutter

REPO = Path(__file__).resolve().parents[1]

# `callbacks/`, `layers/` and `utils/` are folders of the generated package, copied there by the post-gen
# hook. They import one another relatively (`from ..layers import Maxout`), so the tests import them as
# subpackages of one package too: `cnn_tricks`, whose folder is this repository.
_library = types.ModuleType("cnn_tricks", "The template repository's package folders, as the tests import them.")
_library.__path__ = [str(REPO)]
sys.modules.setdefault("cnn_tricks", _library)
RECIPES = REPO / "recipes"
# A package name of its own, so an editable install left by `make demo` (my_cnn) never shadows it.
TEST_ANSWERS = {"project_name": "Tricks Check"}
TEST_PACKAGE = "tricks_check"


def all_recipes() -> list[str]:
    return sorted(p.relative_to(RECIPES).with_suffix("").as_posix() for p in RECIPES.rglob("*.yaml"))


def generate(output_dir: Path, **answers) -> Path:
    """Generate a project with --no-input and the given answers; returns its folder."""
    return Path(cookiecutter(str(REPO), no_input=True, output_dir=str(output_dir), extra_context=answers))


def offline_env(home: Path, project: Path | None = None) -> dict[str, str]:
    """An environment with no W&B login (so W&B goes offline by itself) and the project on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(home), NETRC=str(home / "no-netrc"), PYTHONUNBUFFERED="1")
    if project is not None:
        env["PYTHONPATH"] = str(project / "src")
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
    return result


def qualified_recipe(pkg, recipe: Path, folder: Path) -> Path:
    """A copy of `recipe` in `folder` whose short callback class names are qualified by the generated package.

    The tests also import the repository's copy of the callbacks (`cnn_tricks.callbacks`), and jsonargparse
    refuses a short name two imported classes share; a project imports only its own copy, so the recipe
    itself keeps short names. Names that are not the package's callbacks (Lightning's) stay as they are."""
    import re

    ours = set(importlib.import_module(f"{pkg.__name__}.callbacks").__all__)
    text = re.sub(r"class_path: (\w+)$", lambda m: f"class_path: {pkg.__name__}.callbacks.{m.group(1)}"
                  if m.group(1) in ours else m.group(0), recipe.read_text(), flags=re.MULTILINE)
    copy = folder / f"{recipe.parent.name}-{recipe.name}"
    copy.write_text(text)
    return copy


@pytest.fixture
def cli_in_process(pkg, project, tmp_path, monkeypatch):
    """`make(recipes, *args)`: the generated project's CLI (`run=False`: model, data and trainer built, nothing
    run) for `fit --config configs/default.yaml` plus those recipes and arguments; cwd and HOME are tmp_path and
    W&B is offline."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    cli_module = importlib.import_module(f"{pkg.__name__}.cli")

    def make(recipes, *args: str):
        configs = ["--config", str(project / "configs/default.yaml")]
        for recipe in recipes:
            configs += ["--config", str(qualified_recipe(pkg, project / f"recipes/{recipe}.yaml", tmp_path))]
        return cli_module.CLI(args=[*configs, *args], run=False)

    return make


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    """A project generated once per session with default answers but its own package name."""
    return generate(tmp_path_factory.mktemp("generated"), **TEST_ANSWERS)


@pytest.fixture(scope="session")
def pkg(project):
    """The generated package, imported from the generated folder (plain Python, no install)."""
    sys.path.insert(0, str(project / "src"))
    return importlib.import_module(TEST_PACKAGE)


def pytest_collection_modifyitems(config, items) -> None:
    """TEST_ORDER=reverse or TEST_ORDER=random:<seed> runs the suite in another order: no test may
    depend on what an earlier one left behind."""
    order = os.environ.get("TEST_ORDER", "")
    if order == "reverse":
        items.reverse()
    elif order.startswith("random"):
        random.Random(int(order.partition(":")[2] or 0)).shuffle(items)


@pytest.fixture(autouse=True)
def one_thread():
    """The effect tests train tiny nets: one thread beats two threads fighting over 2 cores.
    TEST_TORCH_THREADS=2 runs them with another count: no effect may hinge on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("TEST_TORCH_THREADS", "1")))
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path
