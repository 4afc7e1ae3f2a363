"""Every class a config may name by its short name (`class_path: MaxNorm`), made importable here.

jsonargparse resolves a short class name among the subclasses of the expected type that have been
imported; this module imports each place that defines such classes, so a config resolves the same
way in every command (`lightning fit`, the ensemble, audit and TANDA commands). Import it; never
import the CLI for this side effect.
"""

from . import callbacks, layers, loggers, reliability, tanda, transforms

__all__ = ["callbacks", "layers", "loggers", "reliability", "tanda", "transforms"]
