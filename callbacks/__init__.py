"""Trick callbacks: one file per trick, each naming its trick ID (docs/tricks.md in the template repository) in the docstring.

Every module here lists its public classes in `__all__`; they are collected below so that the
project's CLI (and recipes, by short class name) can find them without this file being edited
for each new trick.
"""

import importlib
import pkgutil

# The run-folder rule, shared with the CLI: its module is private to this folder, this name is its public face.
from ._diagnostics import run_folder as run_folder

__all__: list[str] = []
for _info in pkgutil.iter_modules(__path__):
    if _info.name.startswith("_"):
        continue
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", ()):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
