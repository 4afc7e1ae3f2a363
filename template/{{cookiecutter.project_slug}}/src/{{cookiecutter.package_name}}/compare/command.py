"""The `compare` command: which recipe helps your data, with confidence intervals.

    <slug> compare --arm NAME=recipes/a.yaml[,recipes/b.yaml] [--arm ...] (--seeds 0 1 2 | --folds 5)
                   [--jobs N] [--root runs/<project>] -- <the baseline's fit arguments>

Everything after `--` is the baseline (e.g. `--config configs/default.yaml --trainer.max_epochs=10`);
an arm is the baseline plus its recipes. Every arm trains on the same seeds, or on the same folds of a
stratified k-fold split with one fixed seed (`--seed`), and is tested on the same test split; the
answer, per metric (test accuracy, NLL, ECE, training time), is each arm's mean with its 95 % CI and the
paired difference to the baseline with its CI, a verdict, and how many seeds a paired t-test would need to
detect it. The same command after Ctrl-C continues where it stopped.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from ..preflight import check_exclusive_recipes, check_recipe_requirements, config_files_in
from .report import report, running_means
from .runs import BASELINE, PACKAGE, Arm, Comparison, execute

# A recipe that sets one of these would change which images train, validate or test: not a recipe to compare.
SPLIT_KEYS = ("dataset", "val_fraction", "test_fraction", "split_seed", "num_folds", "fold", "train_fraction", "root")
ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PACKAGE} compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s --arm NAME=RECIPE[,RECIPE] ... (--seeds SEED SEED ... | --folds K) [--jobs N] -- BASELINE_FIT_ARGS")
    parser.add_argument("--arm", action="append", default=[], metavar="NAME=RECIPE[,RECIPE]",
                        help="an arm: the baseline plus these recipe files (repeat for more arms)")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="train every arm with each seed (2 or more)")
    parser.add_argument("--folds", type=int, metavar="K", help="train every arm on each fold of a stratified K-fold split")
    parser.add_argument("--seed", type=int, default=0, help="with --folds: the one seed of every run (default 0)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once (CPU threads split, one GPU each)")
    parser.add_argument("--root", type=Path, default=None, help="where compare-<id>/ goes (default: runs/<project folder>)")
    return parser


def _split_at_dashes(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1:]


def _read_recipe(path: Path, arm: str) -> dict:
    if not path.is_file():
        raise SystemExit(f"--arm {arm}: recipe file {path} does not exist (paths are relative to {Path.cwd()}).")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SystemExit(f"--arm {arm}: recipe {path} is not valid YAML: {str(error).splitlines()[0]}") from None


def parse_arm(text: str) -> Arm:
    """`NAME=recipes/a.yaml[,recipes/b.yaml]`, checked: files exist and keep the data split."""
    name, sep, files = text.partition("=")
    if not sep or not files:
        raise SystemExit(f"--arm {text!r}: write NAME=recipes/<group>/<name>.yaml[,more.yaml], e.g. --arm ema=recipes/ensemble/ema.yaml.")
    if name == BASELINE:
        raise SystemExit(f"--arm {text!r}: '{BASELINE}' is the arm of the arguments after --; name this arm otherwise.")
    if not ARM_NAME.fullmatch(name):
        raise SystemExit(f"--arm {text!r}: name {name!r} must be letters, digits, '_', '.', '+' or '-' (it names files).")
    recipes = tuple(f.strip() for f in files.split(",") if f.strip())
    for recipe in recipes:
        data = _read_recipe(Path(recipe), name).get("data") or {}
        changed = [key for key in SPLIT_KEYS if isinstance(data, dict) and key in data]
        if changed:
            raise SystemExit(f"--arm {name}: recipe {recipe} sets data.{changed[0]}, which changes the data split or the test "
                             "set: the arms must train and test on the same data. Compare recipes that change training only.")
    return Arm(name, recipes)


def _given(args: Sequence[str], *keys: str) -> str | None:
    """The first of `keys` (`--seed_everything`, ...) that a command line sets, as `--key` or `--key=value`."""
    for arg in args:
        for key in keys:
            if arg == key or arg.startswith(f"{key}="):
                return key
    return None


def _logger_switched_off(args: Sequence[str]) -> str | None:
    """`--trainer.logger=false` (or `--trainer.logger false`/`null`) as written, if the baseline has it."""
    for at, arg in enumerate(args):
        key, sep, value = arg.partition("=")
        if key != "--trainer.logger":
            continue
        value = value if sep else (args[at + 1] if at + 1 < len(args) else "")
        if value.lower() in ("false", "null", "none"):
            return f"--trainer.logger={value}"
    return None


def build_comparison(argv: Sequence[str]) -> tuple[Comparison, int]:
    """The comparison the command line asks for and its --jobs, or SystemExit with one message before anything runs."""
    own, baseline = _split_at_dashes(argv)
    args = _parser().parse_args(own)
    if not baseline:
        raise SystemExit("compare: give the baseline's fit arguments after --, e.g. -- --config configs/default.yaml")
    if baseline[0] in ("fit", "validate", "test", "predict"):
        raise SystemExit(f"compare: drop {baseline[0]!r} after --: compare runs fit and test itself.")
    if (args.seeds is None) == (args.folds is None):
        raise SystemExit(f"compare: give --seeds 0 1 2 (train every arm with each seed) or --folds 5 (on each fold)"
                         f"{', not both' if args.seeds is not None else ''}.")
    if args.seeds is not None and (len(args.seeds) < 2 or len(set(args.seeds)) != len(args.seeds)):
        raise SystemExit(f"--seeds {' '.join(map(str, args.seeds))}: give 2 or more different seeds; a confidence "
                         "interval needs at least 2 runs per arm (3-5 make it useful).")
    if args.folds is not None and args.folds < 2:
        raise SystemExit(f"--folds {args.folds}: use 2 or more folds (5 is usual).")
    if args.jobs < 1:
        raise SystemExit(f"--jobs {args.jobs}: use 1 or more.")
    owned = _given(baseline, "--seed_everything") or (args.folds is not None and _given(baseline, "--data.num_folds", "--data.fold"))
    if owned:
        instead = "--folds" if owned != "--seed_everything" else "--seeds" if args.seeds is not None else "--seed"
        raise SystemExit(f"compare: drop {owned} from the baseline's arguments: compare sets it for every run ({instead}).")
    switched_off = _logger_switched_off(baseline)
    if switched_off:  # every child would stop at LearningRateMonitor ("needs a logger"), one after another
        raise SystemExit(f"compare: drop {switched_off} from the baseline's arguments: every run needs a logger (the "
                         "config's LearningRateMonitor writes to it, and compare groups the runs through it). For runs "
                         "that stay on this machine add --config recipes/logger/csv.yaml instead.")
    arms = [Arm(BASELINE), *(parse_arm(text) for text in args.arm)]
    names = [arm.name for arm in arms]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise SystemExit(f"--arm {duplicate}: two arms have this name; give each arm its own.")
    configs = config_files_in(baseline)
    missing = next((c for c in configs if not c.is_file()), None)
    if missing:
        raise SystemExit(f"compare: the baseline's --config {missing} does not exist (paths are relative to {Path.cwd()}).")
    for arm in arms:  # what `fit` would refuse at start, refused here before any run
        files = [*configs, *(Path(r) for r in arm.recipes)]
        check_recipe_requirements(files)
        check_exclusive_recipes(files)
    units = tuple(args.seeds) if args.seeds is not None else tuple(range(args.folds))
    comparison = Comparison(tuple(arms), "seed" if args.seeds is not None else "fold", units, tuple(baseline),
                            args.root or Path("runs") / Path.cwd().name, args.seed)
    return comparison, args.jobs


def main(argv: Sequence[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    comparison, jobs = build_comparison(argv)
    command_line = f"python -m {PACKAGE} compare {shlex.join(argv)}"
    comparison.write_manifest(command_line)
    results = execute(comparison, sys.executable, jobs, lambda done: running_means(comparison, done))
    path = report(comparison, results, command_line)
    print(f"compare report: {path}", flush=True)
    return path


if __name__ == "__main__":
    main()
