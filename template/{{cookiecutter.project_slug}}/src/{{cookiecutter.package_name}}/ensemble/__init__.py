"""E1/E2/E3/E5 — ensembles: several checkpoints as one model, and the command that builds them.

`module.py` holds the EnsembleModule, `checkpoints.py` what a source names and how members load,
`command.py` the `ensemble` command (`<slug> ensemble --help`).
"""

from .checkpoints import (
           build_member,
           checkpoint_score,
           expand_checkpoints,
           load_checkpoint,
           top_k_checkpoints,
           top_k_wandb,
)
from .command import (
           announce,
           build_datamodule,
           main,
           parse_weights,
           report_test,
           run_ensemble,
           save_predictions,
           train_seeds,
)
from .module import EnsembleModule

__all__ = ["EnsembleModule", "build_datamodule", "build_member", "checkpoint_score", "expand_checkpoints", "load_checkpoint",
           "main", "parse_weights", "report_test", "run_ensemble", "save_predictions", "announce", "top_k_checkpoints", "top_k_wandb", "train_seeds"]
