"""The DataModule of a config's `data:` section, read the way LightningCLI reads it.

The commands besides fit/validate/test/predict (`ensemble`, `audit`, `tanda`) build their data from a
config: its `data:` section plus `--data key=value` overrides (`data_section`). They go through jsonargparse with ImageDataModule's own signature, as the CLI does: every
option, type and choice is the DataModule's, so a new data option needs no change here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .datamodule import ImageDataModule

__all__ = ["data_section", "datamodule_from_section"]


def data_section(config: Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The `data:` mapping of the YAML file `config` (empty without one), then each `key=value` of
    `overrides` (a `--data` option; the value is read as YAML: `image_size=16`, `augment=[]`)."""
    data: dict[str, Any] = {}
    if config is not None:
        if not config.is_file():
            raise SystemExit(f"--config {config}: no such file; give a training config such as configs/default.yaml.")
        data = dict((yaml.safe_load(config.read_text()) or {}).get("data") or {})
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--data {item!r}: write key=value, e.g. --data dataset=digits.")
        data[key] = yaml.safe_load(value)
    return data


def datamodule_from_section(data: dict[str, Any]) -> ImageDataModule:
    """An ImageDataModule from the mapping of a config's `data:` section (values as in the YAML)."""
    from jsonargparse import ArgumentParser

    from . import registry  # noqa: F401  (data.augment names transforms by short class name)

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ImageDataModule, "data", fail_untyped=False)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    return instantiate(parser.parse_object({"data": data})).data
