"""Copy the template's shared parts into the new project and turn on the picked recipes.

`recipes/` and the package folders `callbacks/`, `layers/` and `utils/` live beside `template/` in the
template repository (one copy, linted and tested there); the generated project owns a copy of them, so it
never imports this repo.
The picked recipes are merged into `configs/default.yaml`, exactly as `--config` would merge them.
"""

import itertools
import json
import os
import shutil
import sys
from pathlib import Path

import yaml

REPO_DIR = Path("""{{ cookiecutter._repo_dir }}""")
if not REPO_DIR.is_absolute():  # a template given as a relative path: relative to where cookiecutter was started
    REPO_DIR = Path(os.environ.get("PWD", ".")) / REPO_DIR
# The answers, saved in the project so a later template version can be applied with the same ones
# (`cookiecutter --replay-file .cookiecutter.json ...`, see the project's README).
ANSWERS = json.loads("""{{ cookiecutter | jsonify }}""")
PACKAGE = "{{ cookiecutter.package_name }}"
SHARED_FOLDERS = ("callbacks", "layers", "utils")  # copied into src/<package>/
PICKED = [r.strip().removesuffix(".yaml") for r in """{{ cookiecutter.recipes }}""".split(",") if r.strip()]


def merge_recipe(config: dict, recipe: dict) -> dict:
    """Merge like jsonargparse does for a later --config: dicts deep-merge, `key+` appends."""
    for key, value in recipe.items():
        if key.endswith("+"):
            base = key[:-1]
            current = config.get(base) or []
            config[base] = current + (value if isinstance(value, list) else [value])
        elif isinstance(value, dict) and isinstance(config.get(key), dict) and "class_path" not in value:
            merge_recipe(config[key], value)
        else:
            config[key] = value
    return config


def main() -> None:
    project = Path.cwd()
    shutil.copytree(REPO_DIR.parent / "recipes", project / "recipes", dirs_exist_ok=True)  # exists on an update
    for folder in SHARED_FOLDERS:
        target = project / "src" / PACKAGE / folder
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted((REPO_DIR.parent / folder).glob("*.py")):
            shutil.copy2(source, target / source.name)
    kept = {k: v for k, v in ANSWERS.items() if not k.startswith("_") or k in ("_copy_without_render", "_template")}
    (project / ".cookiecutter.json").write_text(json.dumps({"cookiecutter": kept}, indent=2) + "\n")
    if PICKED:
        default = project / "configs" / "default.yaml"
        text = default.read_text()
        config = yaml.safe_load(text)
        for name in PICKED:
            merge_recipe(config, yaml.safe_load((project / "recipes" / f"{name}.yaml").read_text()) or {})
        header = "".join(line + "\n" for line in itertools.takewhile(lambda row: row.startswith("#"), text.splitlines()))
        sys.path.insert(0, str(project / "src" / PACKAGE))
        sys.dont_write_bytecode = True
        from recipe_info import merged_header  # the one writer of the line the CLI reads back

        header += merged_header(PICKED)
        default.write_text(header + yaml.safe_dump(config, sort_keys=False))


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # cookiecutter then removes the half-written project
        print(f"Cannot finish generating the project: {error}", file=sys.stderr)
        sys.exit(1)
