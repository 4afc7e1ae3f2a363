"""The DataModule of a config's `data:` section, read the way LightningCLI reads it.

The commands besides fit/validate/test/predict (`ensemble`, `audit`) build their data from a run's
config. They go through jsonargparse with ImageDataModule's own signature, as the CLI does: every
option, type and choice is the DataModule's, so a new data option needs no change here.
"""

from __future__ import annotations

from typing import Any

from .datamodule import ImageDataModule

__all__ = ["datamodule_from_section"]


def datamodule_from_section(data: dict[str, Any]) -> ImageDataModule:
    """An ImageDataModule from the mapping of a config's `data:` section (values as in the YAML)."""
    from jsonargparse import ArgumentParser

    from . import registry  # noqa: F401  (data.augment names transforms by short class name)

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ImageDataModule, "data", fail_untyped=False)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    return instantiate(parser.parse_object({"data": data})).data
