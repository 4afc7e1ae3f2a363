"""The contract between the trick callbacks and the LightningModule (callbacks/protocol.py): the project's
ImageClassifier provides what callbacks read, and no callback reads an attribute the Protocol does not
name. Read from the source with `ast`; no training."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import torch
from pytorch_lightning import LightningModule
from torch import nn
from typing_extensions import get_protocol_members

from cnn_tricks.callbacks.protocol import PROVIDED_BY_MODULE, SET_BY_CALLBACKS, TrickModule

from conftest import REPO

CALLBACK_FILES = sorted((REPO / "callbacks").glob("*.py"))
HOOK = re.compile(r"^(setup|teardown|on_\w+|state_dict|load_state_dict)$")


def module_attributes_read(path: Path) -> dict[str, int]:
    """`name -> line` of every `pl_module.<name>` and `getattr/hasattr/setattr(pl_module, "<name>")` in a file."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pl_module":
            found.setdefault(node.attr, node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2
              and isinstance(node.args[0], ast.Name) and node.args[0].id == "pl_module"
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            found.setdefault(node.args[1].value, node.lineno)
    return found


def test_protocol_splits_its_members_into_provided_and_set_by_callbacks():
    members = get_protocol_members(TrickModule)
    assert set(PROVIDED_BY_MODULE) | set(SET_BY_CALLBACKS) == members
    assert not set(PROVIDED_BY_MODULE) & set(SET_BY_CALLBACKS)


def test_image_classifier_provides_what_the_callbacks_read(pkg):
    model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=16, backbone_options={"widths": [8, 16]})
    missing = [name for name in PROVIDED_BY_MODULE if not hasattr(model, name)]
    assert not missing, f"ImageClassifier lacks {missing}, which callbacks/protocol.py says it provides"
    assert isinstance(model.backbone, nn.Module)
    assert isinstance(model.example_input_array, torch.Tensor) and model.example_input_array.shape == (1, 1, 16, 16)
    assert model.pretrained_source is None  # no weights given: a random init
    assert callable(model.load_pretrained)
    assert isinstance(model.hparams.get("backbone"), str)
    # What the callbacks set themselves is not there before they run.
    assert not [name for name in SET_BY_CALLBACKS if hasattr(model, name)]


def test_callbacks_read_only_what_lightning_or_the_protocol_names():
    lightning = set(dir(LightningModule()))  # LightningModule and nn.Module attributes, instance ones included
    declared = get_protocol_members(TrickModule)
    used: set[str] = set()
    unknown = []
    for path in CALLBACK_FILES:
        for name, line in module_attributes_read(path).items():
            used.add(name)
            if name not in lightning and name not in declared:
                unknown.append(f"callbacks/{path.name}:{line}: pl_module.{name}")
    assert not unknown, "add these to callbacks/protocol.py (TrickModule) or stop reading them:\n" + "\n".join(unknown)
    # The scan sees every attribute the Protocol names, so none of them is stale.
    assert declared <= used, f"TrickModule names attributes no callback uses: {sorted(declared - used)}"


def test_every_callback_hook_is_typed_and_marked_override():
    untyped = []
    for path in CALLBACK_FILES:
        for cls in ast.walk(ast.parse(path.read_text())):
            if not isinstance(cls, ast.ClassDef):
                continue
            for fn in cls.body:
                if not (isinstance(fn, ast.FunctionDef) and HOOK.match(fn.name)):
                    continue
                args = [*fn.args.posonlyargs, *fn.args.args[1:], *fn.args.kwonlyargs]
                marked = any(ast.unparse(d) == "override" for d in fn.decorator_list)
                if not marked or fn.returns is None or any(a.annotation is None for a in args):
                    untyped.append(f"callbacks/{path.name}:{fn.lineno}: {cls.name}.{fn.name}")
    assert not untyped, "hooks need full type hints and @override:\n" + "\n".join(untyped)
