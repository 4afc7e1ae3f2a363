"""The trick catalog (docs/tricks.md) stays true: it lists every recipe and every lecture ID, and every
recipe, command, `file.py::Name`, effect test and study it names exists."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from conftest import RECIPES, REPO

CATALOG = REPO / "docs" / "tricks.md"
TEMPLATE_README = REPO / "template" / "{{cookiecutter.project_slug}}" / "README.md"
PKG_ABBREVIATION = "src/<pkg>/"
PKG_DIR = REPO / "template" / "{{cookiecutter.project_slug}}" / "src" / "{{cookiecutter.package_name}}"

GROUP_SIZES = {"A": 8, "P": 4, "I": 4, "T": 4, "F": 8, "R": 6, "D": 4, "E": 5}
LECTURE_IDS = {f"{group}{number}" for group, size in GROUP_SIZES.items() for number in range(1, size + 1)}
COLUMNS = ["ID", "Lecture point", "Recipe(s) or command", "Class / function", "Effect test", "Study"]
ID_COL, POINT_COL, RECIPE_COL, CODE_COL, TEST_COL, STUDY_COL = COLUMNS

CODE_SPAN = re.compile(r"`([^`]+)`")
RECIPE_NAME = re.compile(r"[a-z0-9-]+/[a-z0-9-]+")
PACKAGE_COMMAND = re.compile(r"python -m <pkg>\.([\w.]+)")
SCRIPT_COMMAND = re.compile(r"python ([\w./-]+\.py)")
# `lightning test --config ... --data.predict_root <folder>`: a LightningCLI subcommand and the options it names.
LIGHTNING_COMMAND = re.compile(r"^lightning (?:fit|validate|test|predict) .*")
LIGHTNING_OPTION = re.compile(r"--(data|model)\.(\w+)")
REFERENCE = re.compile(r"([\w./<>{}-]+\.py)::(\w+)")
ID_OR_RANGE = re.compile(r"\b([A-Z])(\d+)(?:\s*[–-]\s*\1?(\d+))?")
CELL_SEPARATOR = re.compile(r"(?<!\\)\|")


@dataclass(frozen=True)
class Row:
    section: str
    line: int
    cells: dict[str, str]

    @property
    def ids(self) -> set[str]:
        """The lecture IDs in the ID cell: `A1`, `F1–F4` (a range), `D1–D4, F8 (report)`; none in `*extra*`, `—`."""
        found: set[str] = set()
        for group, first, last in ID_OR_RANGE.findall(self.cells[ID_COL]):
            found.update(f"{group}{number}" for number in range(int(first), int(last or first) + 1))
        return found

    def spans(self, column: str) -> list[str]:
        return CODE_SPAN.findall(self.cells[column])

    def __str__(self) -> str:
        return f"docs/tricks.md:{self.line} ({self.section}, {self.cells[ID_COL]})"


def split_cells(line: str) -> list[str]:
    return [cell.strip() for cell in CELL_SEPARATOR.split(line.strip().strip("|"))]


def parse_tables(text: str) -> tuple[list[list[str]], list[Row]]:
    """Every Markdown table of the catalog: their headers, and their rows keyed by the header's names."""
    headers: list[list[str]] = []
    rows: list[Row] = []
    lines = text.splitlines()
    section = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            section = line[3:].strip()
        separator = lines[index + 1] if index + 1 < len(lines) else ""
        if line.startswith("|") and separator.startswith("|") and set(separator.replace("|", "").strip()) <= {"-", ":"}:
            header = split_cells(line)
            headers.append(header)
            index += 2
            while index < len(lines) and lines[index].startswith("|"):
                cells = split_cells(lines[index])
                assert len(cells) == len(header), f"docs/tricks.md:{index + 1}: {len(cells)} cells, not {len(header)}"
                rows.append(Row(section, index + 1, dict(zip(header, cells, strict=True))))
                index += 1
            continue
        index += 1
    return headers, rows


def catalog() -> tuple[str, list[list[str]], list[Row]]:
    assert CATALOG.is_file(), "docs/tricks.md is missing"
    text = CATALOG.read_text(encoding="utf-8")
    headers, rows = parse_tables(text)
    return text, headers, rows


def repo_path(path: str) -> Path:
    """A path as the catalog writes it: relative to the repository root, `src/<pkg>/` abbreviating the package."""
    if path.startswith(PKG_ABBREVIATION):
        return PKG_DIR / path[len(PKG_ABBREVIATION):]
    return REPO / path


def module_level_names(path: Path) -> set[str]:
    """Names a module defines at its top level: classes, functions and assigned variables."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def defined_tests(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    functions = (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))
    return [n.name for n in functions if n.name.startswith("test_")]


def named_recipes(row: Row) -> list[str]:
    return [span for span in row.spans(RECIPE_COL) if RECIPE_NAME.fullmatch(span)]


def named_commands(row: Row) -> list[str]:
    return [match for span in row.spans(RECIPE_COL) for match in PACKAGE_COMMAND.findall(span)]


def test_catalog_tables_have_the_catalog_columns():
    _, headers, rows = catalog()
    assert len(headers) >= len(GROUP_SIZES) + 1, "one table per group and an 'Other recipes' table"
    for header in headers:
        assert header == COLUMNS, f"table header {header}, expected {COLUMNS}"
    assert "Other recipes" in {row.section for row in rows}


def test_every_lecture_id_has_a_row_and_every_id_is_real():
    _, _, rows = catalog()
    listed: set[str] = set()
    for row in rows:
        unknown = row.ids - LECTURE_IDS
        assert not unknown, f"{row}: {sorted(unknown)} are not lecture IDs"
        listed |= row.ids
    assert listed == LECTURE_IDS, f"IDs without a row: {sorted(LECTURE_IDS - listed)}"


def test_every_recipe_is_in_the_catalog():
    _, _, rows = catalog()
    in_catalog = {name for row in rows for name in named_recipes(row)}
    in_folder = {p.relative_to(RECIPES).with_suffix("").as_posix() for p in RECIPES.rglob("*.yaml")}
    assert in_folder, "no recipes found"
    assert in_folder <= in_catalog, f"recipes missing from docs/tricks.md: {sorted(in_folder - in_catalog)}"


def test_named_recipes_and_commands_exist():
    _, _, rows = catalog()
    problems = []
    for row in rows:
        recipes, commands = named_recipes(row), named_commands(row)
        scripts = [m for span in row.spans(RECIPE_COL) for m in SCRIPT_COMMAND.findall(span)]
        lightning = [span for span in row.spans(RECIPE_COL) if LIGHTNING_COMMAND.fullmatch(span)]
        for span in lightning:
            for owner, option in LIGHTNING_OPTION.findall(span):
                source = (PKG_DIR / ("datamodule.py" if owner == "data" else "module.py")).read_text(encoding="utf-8")
                if not re.search(rf"^\s+{option}:", source, re.MULTILINE):
                    problems.append(f"{row}: `--{owner}.{option}` is not an argument of the {owner} class")
        if not (recipes or commands or scripts or lightning):
            problems.append(f"{row}: names no recipe (`group/name`) and no command")
        problems += [f"{row}: no recipes/{name}.yaml" for name in recipes if not (RECIPES / f"{name}.yaml").is_file()]
        for module in commands:
            base = PKG_DIR.joinpath(*module.split("."))
            if not (base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()):
                where = base.relative_to(REPO)
                problems.append(f"{row}: `python -m <pkg>.{module}`: neither {where}.py nor {where}/__main__.py exists")
        problems += [f"{row}: no script {script}" for script in scripts if not (REPO / script).is_file()]
    assert not problems, "\n".join(problems)


def test_named_classes_and_functions_are_defined():
    text, _, rows = catalog()
    references = REFERENCE.findall(text)
    assert len(references) >= len(LECTURE_IDS), "the catalog names too few `file.py::Name`"
    for row in rows:
        cell = row.cells[CODE_COL]
        assert REFERENCE.search(cell) or "Lightning's" in cell, f"{row}: no `file.py::Name` (nor a Lightning class)"
    problems = []
    for path, name in sorted(set(references)):
        file = repo_path(path)
        if not file.is_file():
            problems.append(f"{path}::{name}: no file {file.relative_to(REPO)}")
        elif name not in module_level_names(file):
            problems.append(f"{path}::{name}: {file.relative_to(REPO)} defines no {name} at module level")
    assert not problems, "\n".join(problems)


def test_named_effect_tests_exist_and_test_something():
    _, _, rows = catalog()
    problems = []
    for row in rows:
        tests = [span for span in row.spans(TEST_COL) if span.endswith(".py")]
        if row.ids and not tests:
            problems.append(f"{row}: a lecture trick without an effect test")
        for test in tests:
            file = repo_path(test)
            if not (test.startswith("tests/test_") and file.is_file()):
                problems.append(f"{row}: no test file {test}")
            elif not defined_tests(file):
                problems.append(f"{row}: {test} has no `def test_...`")
    assert not problems, "\n".join(problems)


def test_named_studies_exist():
    _, _, rows = catalog()
    problems = []
    for row in rows:
        cell = row.cells[STUDY_COL]
        studies = row.spans(STUDY_COL)
        if cell != "—" and not studies:
            problems.append(f"{row}: study cell {cell!r} is neither — nor `docs/studies/<name>.md`")
        for study in studies:
            if not (study.startswith("docs/studies/") and study.endswith(".md") and (REPO / study).is_file()):
                problems.append(f"{row}: no study {study}")
    assert not problems, "\n".join(problems)


def test_catalog_names_the_lecture_not_internal_notes():
    text = CATALOG.read_text(encoding="utf-8")
    # Our internal spec's names, spelled in pieces so this file does not itself carry them.
    for internal in ("TRICKS" + ".md", ".." + "/shared"):
        assert internal not in text, f"docs/tricks.md mentions {internal!r}"
    assert "design" + " notes" not in text.lower(), "docs/tricks.md mentions our internal notes"
    assert not re.search(r"\bthe\s+seed\b", text, re.IGNORECASE), "docs/tricks.md calls the lecture by our internal word"


def test_generated_readme_points_at_the_catalog():
    assert "docs/tricks.md" in TEMPLATE_README.read_text(encoding="utf-8")
