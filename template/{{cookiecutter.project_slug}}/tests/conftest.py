"""Shared fixtures: the project's package, and an offline, isolated working folder per test."""

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the tests also run before `pip install -e .`
PACKAGE = next(p.name for p in sorted((ROOT / "src").iterdir()) if (p / "__init__.py").is_file())
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"
RECIPES = ROOT / "recipes"


@pytest.fixture(scope="session")
def pkg():
    return importlib.import_module(PACKAGE)


@pytest.fixture(scope="session")
def cli(pkg):
    return importlib.import_module(f"{PACKAGE}.cli")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test runs in its own folder with no W&B login, so W&B goes offline by itself."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    yield tmp_path
    import wandb

    wandb.finish()  # a run left open would be reused by the next test's logger
