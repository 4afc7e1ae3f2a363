"""What a recipe says about itself, read in one place.

A recipe (`recipes/<group>/<name>.yaml`) starts with comment lines that carry its metadata:

    # <ID> — <what it does>        the trick ID of the catalog (docs/tricks.md) and one line for tables
    # exclusive: <slot>            at most one active recipe per slot (two LR schedules, two init schemes)
    # requires: <extra>            an optional package, installed by the project's extra of that name

`read_recipes` is the one reader: the generation hooks (which load this file by path, before the
project exists), the CLI's start-up checks and the template README's recipe table all use it. Plain
Python with no package imports, so it also runs as a script:

    python src/<package>/recipe_info.py README.md      # rewrite the recipe table between its markers
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MERGED_PREFIX", "RecipeInfo", "merged_header", "merged_recipes", "read_recipe", "read_recipes", "recipe_table"]

MERGED_PREFIX = "# Recipes merged at generation: "
TABLE_START, TABLE_END = "<!-- recipe table: generated from the recipes' first lines -->", "<!-- end of recipe table -->"


@dataclass(frozen=True)
class RecipeInfo:
    name: str  # <group>/<name>
    trick: str  # the catalog ID (e.g. "R4", "T3 — extra"), or the name for recipes outside the catalog
    summary: str  # what it does, one line
    exclusive: str | None  # the slot it claims
    requires: str | None  # the optional extra it needs
    path: Path


def read_recipe(path: Path, root: Path) -> RecipeInfo:
    """The metadata in the header of the recipe file `path` (under the recipes folder `root`)."""
    text = path.read_text()
    name = path.relative_to(root).with_suffix("").as_posix()
    first = text.splitlines()[0].removeprefix("#").strip() if text.strip() else ""
    trick, _, summary = first.partition(" — ")  # a user's own recipe may have no such line: both stay ""
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    exclusive = re.search(r"^# exclusive: *([\w-]+)", header, re.MULTILINE)
    requires = re.search(r"^# requires: *([\w-]+)", header, re.MULTILINE)
    return RecipeInfo(name, trick.strip() if summary else "", summary.strip(), exclusive and exclusive.group(1),
                      requires and requires.group(1), path)


def read_recipes(root: Path) -> dict[str, RecipeInfo]:
    """Every recipe under `root`, by name, sorted."""
    return {info.name: info for info in (read_recipe(p, root) for p in sorted(root.rglob("*.yaml")))}


def merged_header(names: list[str]) -> str:
    """The config line that records the recipes merged into it at generation."""
    return MERGED_PREFIX + ", ".join(names) + "\n"


def merged_recipes(config_text: str) -> list[str]:
    """The recipes a config's header says were merged into it at generation."""
    line = next((line for line in config_text.splitlines() if line.startswith(MERGED_PREFIX)), None)
    return [name.strip() for name in line.removeprefix(MERGED_PREFIX).split(",") if name.strip()] if line else []


def recipe_table(root: Path) -> str:
    """The Markdown table of every recipe: name, then ID and summary from its first line."""
    rows = ["| Recipe | What it does |", "|---|---|"]
    for info in read_recipes(root).values():
        what = info.summary if info.trick == info.name else f"{info.trick} — {info.summary}"
        rows.append(f"| `{info.name}` | {what.replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"


def write_table(readme: Path, root: Path) -> None:
    """Replace the table between the README's markers with `recipe_table(root)`."""
    text = readme.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    readme.write_text(text[:start] + "\n" + recipe_table(root) + text[end:])


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    write_table(target, target.resolve().parent / "recipes")
