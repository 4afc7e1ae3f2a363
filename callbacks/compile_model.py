"""Speed — torch.compile of the model, in place, so checkpoints keep the eager model's keys.

Lecture: none (it predates this trick); a GPU speed trick. Lightning compiles a module only when
you pass `torch.compile(model)` to `fit`, which a config file cannot do, and that wrapper renames
every state_dict key (`_orig_mod.`). `nn.Module.compile()` compiles in place; this callback calls it.

Card:
    What: `model.compile(mode=..., backend=...)` on the LightningModule's backbone at setup; the
        first batches trace and compile it (TorchDynamo + Inductor by default), later ones run the
        fused kernels.
    When it helps: long runs on GPUs (fused elementwise ops, fewer kernel launches; `mode:
        max-autotune` searches conv/matmul kernels too). On CPU or in short runs the compile time
        (tens of seconds) can cost more than it saves.
    Cost: compile time at the first step (and again for a new input shape, e.g. the last partial
        batch, unless `dynamic: true`); a C++ compiler on CPU.
"""

from __future__ import annotations

from typing import Literal

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from typing_extensions import override

__all__ = ["CompileModel"]

MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# torch.compile's modes (None: its default); `backend` stays a str, its choices depend on what is installed.
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


class CompileModel(Callback):
    """Compile the model's backbone (or the whole module when it has none) with torch.compile.

    The backbone is the module's `backbone` attribute (`protocol.TrickModule`).

    Args:
        mode: torch.compile's mode (`default`, `reduce-overhead`, `max-autotune`, ...).
        backend: torch.compile's backend (`inductor`; `eager`/`aot_eager` to debug graph breaks).
        dynamic: compile for varying input shapes (None: torch decides after a shape changes).
        fullgraph: fail on a graph break instead of falling back to Python for that part.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[CompileModel(mode="max-autotune")], precision="bf16-mixed")
    """

    def __init__(self, mode: CompileMode | None = None, backend: str = "inductor", dynamic: bool | None = None,
                 fullgraph: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"CompileModel(mode={mode!r}): use one of {', '.join(map(str, MODES))}.")
        backends = torch._dynamo.list_backends(exclude_tags=())
        if backend not in backends:
            raise ValueError(f"CompileModel(backend={backend!r}): use one of {', '.join(backends)}.")
        self.options = {"mode": mode, "backend": backend, "dynamic": dynamic, "fullgraph": fullgraph}
        self.compiled: torch.nn.Module | None = None

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.compiled is not None:
            return
        self.compiled = getattr(pl_module, "backbone", pl_module)
        self.compiled.compile(**self.options)  # in place: parameters and state_dict keys unchanged
