"""`compare`: which recipe helps your data, with confidence intervals.

`<slug> compare --arm NAME=recipes/... --seeds 0 1 2 -- <baseline fit arguments>` trains the baseline and
every arm on the same seeds (or folds), tests what each run trained (its best checkpoint, or the ensemble or
weight average it kept: see `child.py`) on the same test split and reports, per metric, the paired difference
to the baseline with its 95 % CI and a verdict. `stats.py` holds the
statistics, `runs.py` the runs and resuming, `launch.py` the process pool (shared with `ensemble seeds`),
`child.py` one run, `report.py` the table, CSV, figure and markdown, `command.py` the command line.
"""

from .command import build_comparison, main
from .stats import mean_interval, paired_difference, seeds_needed, t_cdf, t_quantile, verdict

__all__ = ["build_comparison", "main", "mean_interval", "paired_difference", "seeds_needed", "t_cdf", "t_quantile", "verdict"]
