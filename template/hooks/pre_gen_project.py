"""Validate every cookiecutter answer before anything is written.

cookiecutter removes the half-generated folder when this hook exits non-zero, so a bad answer
leaves nothing behind. Each message names the value and the fix.
"""

import keyword
import os
import re
import sys
from pathlib import Path

ANSWERS = {
    "project_name": """{{ cookiecutter.project_name }}""",
    "project_slug": """{{ cookiecutter.project_slug }}""",
    "package_name": """{{ cookiecutter.package_name }}""",
    "dataset": """{{ cookiecutter.dataset }}""",
    "backbone": """{{ cookiecutter.backbone }}""",
    "recipes": """{{ cookiecutter.recipes }}""",
    "logger": """{{ cookiecutter.logger }}""",
    "wandb_project": """{{ cookiecutter.wandb_project }}""",
    "wandb_entity": """{{ cookiecutter.wandb_entity }}""",
}
REPO_DIR = Path("""{{ cookiecutter._repo_dir }}""")
if not REPO_DIR.is_absolute():  # a template given as a relative path: relative to where cookiecutter was started
    REPO_DIR = Path(os.environ.get("PWD", ".")) / REPO_DIR

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder")
BACKBONES = ("sized_convnet", "resnet18", "resnet34", "resnet50")
LOGGERS = ("wandb", "csv", "tensorboard")
# A package with one of these names would shadow a dependency the project imports.
RESERVED_PACKAGES = {
    "torch", "torchvision", "torchmetrics", "lightning", "pytorch_lightning", "lightning_fabric",
    "wandb", "jsonargparse", "sklearn", "numpy", "yaml", "tests", "test", "src", "callbacks",
}


def find_recipes(repo_dir: Path) -> dict[str, str]:
    """Recipe name -> its exclusive slot ('' when it combines with anything), read by the generated
    package's `recipe_info` (plain Python, no package imports): the one reader of recipe headers."""
    (package,) = repo_dir.glob("*/src/*/recipe_info.py")
    sys.path.insert(0, str(package.parent))
    sys.dont_write_bytecode = True  # no __pycache__ inside the template
    from recipe_info import read_recipes

    return {name: info.exclusive or "" for name, info in read_recipes(repo_dir.parent / "recipes").items()}


def validate(answers: dict, known_recipes: dict[str, str]) -> list[str]:
    errors = []
    if not answers["project_name"].strip():
        errors.append("project_name is empty: give the project a name, e.g. project_name='My CNN'.")
    slug = answers["project_slug"]
    if not re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", slug):
        errors.append(
            f"project_slug={slug!r} is not a valid folder/distribution name: use lowercase letters, "
            "digits and single hyphens, starting with a letter (e.g. project_slug=my-cnn)."
        )
    package = answers["package_name"]
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", package) or keyword.iskeyword(package):
        errors.append(
            f"package_name={package!r} is not a valid Python package name: use lowercase letters, "
            "digits and underscores, starting with a letter (e.g. package_name=my_cnn)."
        )
    elif package in RESERVED_PACKAGES:
        errors.append(
            f"package_name={package!r} would shadow a package the project imports: pick another "
            f"name (e.g. package_name={package}_cnn)."
        )
    for key, choices in (("dataset", DATASETS), ("backbone", BACKBONES), ("logger", LOGGERS)):
        if answers[key] not in choices:
            errors.append(f"{key}={answers[key]!r} is unknown: choose one of {', '.join(choices)}.")
    names = [r.strip() for r in answers["recipes"].split(",") if r.strip()]
    unknown = [r for r in names if r.removesuffix(".yaml") not in known_recipes]
    if unknown:
        errors.append(
            f"recipes={','.join(unknown)!r}: no such recipe. Valid recipes: {', '.join(known_recipes)}."
        )
    if len(set(names)) != len(names):
        errors.append(f"recipes={answers['recipes']!r} names a recipe twice: list each once.")
    slots: dict[str, list[str]] = {}
    for name in names:
        slot = known_recipes.get(name.removesuffix(".yaml"))
        if slot:
            slots.setdefault(slot, []).append(name)
    for slot, clash in slots.items():
        if len(clash) > 1:
            errors.append(f"recipes {' and '.join(clash)} cannot be combined: each sets the {slot}. Keep one of them.")
    for key in ("wandb_project", "wandb_entity"):
        value = answers[key]
        if (value or key == "wandb_project") and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", value):
            errors.append(
                f"{key}={value!r} is not a valid W&B name: use letters, digits, '-', '_' and '.' "
                f"(at most 128 characters){' or leave it empty' if key == 'wandb_entity' else ''}."
            )
    return errors


if __name__ == "__main__":
    problems = validate(ANSWERS, find_recipes(REPO_DIR))
    if problems:
        print("Cannot generate the project:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        sys.exit(1)
