"""Generation: default and non-default answers, invalid answers, leftovers, nested template, git URL."""

from __future__ import annotations

import functools
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import RECIPES, REPO, all_recipes, generate, offline_env

TEMPLATE = REPO / "template" / "{{cookiecutter.project_slug}}"
COOKIECUTTER = [sys.executable, "-m", "cookiecutter"]


def files_of(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def expected_files(package: str) -> set[str]:
    files = {p.replace("{{cookiecutter.package_name}}", package) for p in files_of(TEMPLATE)}
    files |= {f"recipes/{r}.yaml" for r in all_recipes()}
    files |= {f"src/{package}/{p.relative_to(REPO).as_posix()}" for d in ("callbacks", "layers", "utils") for p in (REPO / d).glob("*.py")}
    return files | {".cookiecutter.json"}  # the answers, for template updates


def test_default_answers_give_the_exact_file_set(tmp_path):
    project = generate(tmp_path)
    assert project.name == "my-cnn"
    assert files_of(project) == expected_files("my_cnn")
    config = yaml.safe_load((project / "configs" / "default.yaml").read_text())
    assert config["data"]["dataset"] == "digits"
    assert config["model"]["backbone"] == "sized_convnet"
    assert config["trainer"]["logger"]["class_path"] == "AutoWandbLogger"
    assert config["trainer"]["logger"]["init_args"]["project"] == "my-cnn"


ANSWER_MATRIX = (
    [{"dataset": d} for d in ("mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder")]
    + [{"backbone": b} for b in ("resnet18", "resnet34", "resnet50")]
    + [{"logger": "csv"}, {"logger": "tensorboard"}]
    + [{"project_name": "Lens Study", "package_name": "lens", "author": "A. Person", "wandb_project": "lens-2026",
        "wandb_entity": "my-team", "recipes": "regularize/max-norm,ensemble/ema", "backbone": "resnet18", "logger": "csv"}]
)


@pytest.mark.parametrize("answers", ANSWER_MATRIX, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()))
def test_non_default_answers(tmp_path, answers):
    project = generate(tmp_path, **answers)
    package = answers.get("package_name", project.name.replace("-", "_"))
    assert (project / "src" / package / "cli.py").is_file()
    config = yaml.safe_load((project / "configs" / "default.yaml").read_text())
    assert config["data"]["dataset"] == answers.get("dataset", "digits")
    in_memory = answers.get("dataset") in ("mnist", "fashion_mnist", "cifar10", "cifar100")  # torchvision keeps them as tensors
    assert config["data"].get("device_augment") == ("auto" if in_memory else None)
    assert config["model"]["backbone"] == answers.get("backbone", "sized_convnet")
    logger = {"wandb": "AutoWandbLogger", "csv": "CSVLogger", "tensorboard": "TensorBoardLogger"}
    assert config["trainer"]["logger"]["class_path"] == logger[answers.get("logger", "wandb")]
    pyproject = (project / "pyproject.toml").read_text()
    dependencies = pyproject.split("[project.optional-dependencies]")[0]  # tensorboard is an extra of every project
    assert ('"tensorboard' in dependencies) == (answers.get("logger") == "tensorboard")
    assert 'tensorboard = ["tensorboard' in pyproject
    assert f'lightning = "{package}.cli:lightning_main"' in pyproject
    if "wandb_entity" in answers:
        assert config["trainer"]["logger"]["class_path"] == "CSVLogger"  # csv picked: no W&B section
    for path in project.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="ignore")
            assert "{{" not in text and "}}" not in text and "{%" not in text, f"template leftover in {path}"


def test_picked_recipes_are_active_in_the_default_config(tmp_path):
    project = generate(tmp_path, recipes="regularize/max-norm, ensemble/ema")
    text = (project / "configs" / "default.yaml").read_text()
    assert "# Recipes merged at generation: regularize/max-norm, ensemble/ema" in text
    callbacks = [c["class_path"].rpartition(".")[2] for c in yaml.safe_load(text)["trainer"]["callbacks"]]
    assert callbacks == ["SafeCheckpoint", "NanGuard", "LearningRateMonitor", "EvaluationReport", "MaxNorm",
                         "EMAWeightAveraging"]


BAD_ANSWERS = [
    ({"project_name": " "}, "project_name is empty"),
    ({"project_slug": "My CNN"}, "project_slug='My CNN' is not a valid"),
    ({"package_name": "2fast"}, "package_name='2fast' is not a valid Python package name"),
    ({"package_name": "class"}, "package_name='class' is not a valid Python package name"),
    ({"package_name": "torch"}, "package_name='torch' would shadow"),
    ({"recipes": "regularize/max-norm,augment/nope"}, "recipes='augment/nope': no such recipe. Valid recipes: activation/elu, activation/gelu"),
    ({"recipes": "ensemble/ema,ensemble/ema"}, "names a recipe twice"),
    ({"wandb_project": "a/b"}, "wandb_project='a/b' is not a valid W&B name"),
    ({"wandb_entity": "team x"}, "wandb_entity='team x' is not a valid W&B name"),
    ({"dataset": "svhn"}, "svhn"),
    ({"backbone": "vgg11"}, "vgg11"),
    ({"logger": "mlflow"}, "mlflow"),
]


@pytest.mark.parametrize(("answers", "message"), BAD_ANSWERS, ids=lambda v: str(v)[:40])
def test_invalid_answers_fail_with_a_message_and_leave_nothing(tmp_path, answers, message):
    out = tmp_path / "out"
    out.mkdir()
    args = [f"{k}={v}" for k, v in answers.items()]
    result = subprocess.run([*COOKIECUTTER, "--no-input", "-o", str(out), str(REPO), *args],
                            capture_output=True, text=True, env=offline_env(tmp_path))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert list(out.iterdir()) == []


def test_interactive_generation_takes_typed_answers(tmp_path):
    out = tmp_path / "out"
    # template choice, project name, slug, package, author, dataset, backbone, recipes, logger, W&B project, entity
    answers = "1\nDemo Net\n\n\n\n2\n\nregularize/max-norm\n2\n\n\n"
    result = subprocess.run([*COOKIECUTTER, "-o", str(out), str(REPO)], input=answers, capture_output=True,
                            text=True, env=offline_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((out / "demo-net" / "configs" / "default.yaml").read_text())
    assert config["data"]["dataset"] == "mnist"
    assert config["trainer"]["logger"]["class_path"] == "CSVLogger"
    assert config["trainer"]["callbacks"][-1]["class_path"] == "MaxNorm"


def copy_of_this_repo(tmp_path: Path) -> Path:
    source = tmp_path / "template-repo"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", "build", ".git", "__pycache__", "*.egg-info"))
    return source


def test_recipes_that_claim_the_same_slot_are_refused_at_generation(tmp_path):
    source = copy_of_this_repo(tmp_path)
    (source / "recipes" / "fake").mkdir()
    for name in ("one", "two"):
        (source / "recipes" / "fake" / f"{name}.yaml").write_text(f"# X — {name}\n# exclusive: fake-slot\ntrainer: {{}}\n")
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run([*COOKIECUTTER, "--no-input", "-o", str(out), str(source), "recipes=fake/one,fake/two"],
                            capture_output=True, text=True, env=offline_env(tmp_path))
    assert result.returncode != 0
    assert "recipes fake/one and fake/two cannot be combined: each sets the fake" in result.stderr
    assert list(out.iterdir()) == []


def test_generation_from_a_git_url(tmp_path):
    """`cookiecutter <git url>`: the hooks find recipes/ and callbacks/ beside template/ in the clone."""
    source = copy_of_this_repo(tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(source)]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "template"]):
        subprocess.run([*git, *cmd], check=True)
    out = tmp_path / "out"
    result = subprocess.run([*COOKIECUTTER, "--no-input", "-o", str(out), f"file://{source}", "recipes=ensemble/ema"],
                            capture_output=True, text=True, env=offline_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "my-cnn" / "recipes" / "ensemble" / "ema.yaml").is_file()
    assert (out / "my-cnn" / "src" / "my_cnn" / "callbacks" / "max_norm.py").is_file()


@functools.cache
def recipe_info():
    """The generated package's one reader of recipe headers (plain Python: imported by path)."""
    sys.path.insert(0, str(next(TEMPLATE.glob("src/*/recipe_info.py")).parent))
    return importlib.import_module("recipe_info")


def test_every_recipe_names_itself_in_its_first_line():
    for name, info in recipe_info().read_recipes(RECIPES).items():
        assert info.trick and info.summary, f"{name}: first line must be '# <ID or name> — <what>'"
        assert yaml.safe_load(info.path.read_text()), f"{name} is empty"
    assert set(recipe_info().read_recipes(RECIPES)) == set(all_recipes())


def test_readme_table_is_the_recipes_own_first_lines():
    """The README's recipe table is rendered from the recipes' headers by the same reader the hooks and
    the CLI use: a recipe added, removed or reworded without the table fails here."""
    readme = (REPO / "README.md").read_text()
    reader = recipe_info()
    table = readme[readme.index(reader.TABLE_START) + len(reader.TABLE_START):readme.index(reader.TABLE_END)]
    fix = f"python '{TEMPLATE}/src/{{{{cookiecutter.package_name}}}}/recipe_info.py' README.md rewrites it"
    assert table.strip() == reader.recipe_table(RECIPES).strip(), fix
    rows = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    assert rows == set(all_recipes())


def test_exclusive_slots_and_requirements_come_from_the_headers():
    infos = recipe_info().read_recipes(RECIPES)
    assert infos["train/one-cycle"].exclusive == infos["train/plateau"].exclusive == "lr-schedule"
    assert infos["logger/tensorboard"].requires == "tensorboard" and infos["logger/csv"].requires is None
    assert recipe_info().merged_recipes("# x\n" + recipe_info().merged_header(["a/b", "c/d"])) == ["a/b", "c/d"]


def test_template_update_with_the_saved_answers_keeps_them_and_the_users_files(tmp_path):
    """The README's update path: regenerate over the project with `.cookiecutter.json` (the answers)."""
    source = copy_of_this_repo(tmp_path)
    out = tmp_path / "out"
    create = [*COOKIECUTTER, "--no-input", "-o", str(out), str(source), "project_name=Up Test", "recipes=ensemble/ema"]
    assert subprocess.run(create, capture_output=True, text=True, env=offline_env(tmp_path)).returncode == 0
    project = out / "up-test"
    (project / "notes.txt").write_text("mine")
    (source / "recipes" / "logger" / "later.yaml").write_text("# logger/later — a recipe added to the template later\n")
    update = [*COOKIECUTTER, "--replay-file", ".cookiecutter.json", "--overwrite-if-exists", "--output-dir", "..",
              "--directory", "template", str(source)]
    result = subprocess.run(update, cwd=project, capture_output=True, text=True, env=offline_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "recipes" / "logger" / "later.yaml").is_file()
    assert (project / "notes.txt").read_text() == "mine"
    assert (project / "src" / "up_test" / "cli.py").is_file() and not (out / "my-cnn").exists()
    assert "# Recipes merged at generation: ensemble/ema" in (project / "configs" / "default.yaml").read_text()


def test_generated_project_passes_its_own_lint_hook(tmp_path):
    """What `pre-commit run --all-files` runs in a generated project: ruff with the project's own config."""
    project = generate(tmp_path, recipes="regularize/max-norm")
    hook = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())["repos"][0]["hooks"][0]
    assert hook["entry"].startswith("ruff check")
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run([str(ruff), *hook["entry"].split()[1:], "."], cwd=project, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    workflow = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    steps = " ".join(str(step.get("run", "")) for step in workflow["jobs"]["test"]["steps"])
    assert 'pip install -e ".[test,dev]"' in steps and "pre-commit run --all-files" in steps and "pytest" in steps
