"""Trick callbacks: one file per trick, each naming its trick ID (docs/tricks.md in the template repository) in the docstring.

Every module here lists its public classes in `__all__`; they are collected below so that the
project's CLI (and recipes, by short class name) can find them without this file being edited
for each new trick.
"""

import importlib
import pkgutil

# Building blocks the rest of the package shares (the run-folder rule, the ensemble maths): their
# modules are private to this folder, these names are its public face.
from ._diagnostics import run_folder as run_folder
from ._ensemble_core import METHODS as METHODS
from ._ensemble_core import combine as combine
from ._ensemble_core import member_logits as member_logits
from ._ensemble_core import nll as nll
from ._ensemble_core import normalized_weights as normalized_weights
from ._ensemble_core import stack_states as stack_states
from ._ensemble_core import vmap_pays_off as vmap_pays_off

__all__: list[str] = []
for _info in pkgutil.iter_modules(__path__):
    if _info.name.startswith("_"):
        continue
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", ()):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
