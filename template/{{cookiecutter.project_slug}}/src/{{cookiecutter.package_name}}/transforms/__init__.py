"""Data transforms that torchvision does not ship: one file per trick, each naming its trick ID.

Every module lists its public names in `__all__`; they are collected here so recipes can name
them by short class name (`class_path: LensDistortion`). torchvision's own transforms are named
by full path in recipes (`torchvision.transforms.v2.RandomHorizontalFlip`): the short names exist
twice there (v1 and v2).
"""

import importlib
import pkgutil

__all__: list[str] = []
for _info in pkgutil.iter_modules(__path__):
    if _info.name.startswith("_"):
        continue
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", ()):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
