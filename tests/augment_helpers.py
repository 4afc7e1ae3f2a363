"""Helpers of the A*/P* tests: build the transforms a recipe configures, as the CLI would."""

from __future__ import annotations

import importlib

import yaml

from conftest import RECIPES


def build(spec: dict, pkg):
    """Instantiate one `{class_path, init_args}` entry; short names come from `<pkg>.transforms`."""
    path = spec["class_path"]
    if "." in path:
        module, name = path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
    else:
        cls = getattr(importlib.import_module(f"{pkg.__name__}.transforms"), path)
    args = dict(spec.get("init_args") or {})
    if "transforms" in args:
        args["transforms"] = [build(child, pkg) for child in args["transforms"]]
    return cls(**args)


def recipe(name: str) -> dict:
    return yaml.safe_load((RECIPES / f"{name}.yaml").read_text())


def recipe_transforms(name: str, pkg, key: str = "augment+") -> list:
    return [build(spec, pkg) for spec in recipe(name)["data"][key]]
