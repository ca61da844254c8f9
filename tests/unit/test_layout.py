"""The code's layout holds: configuration is a leaf, no stage imports a stage, no backbone imports a
backbone, and params.yaml agrees with the schema's defaults (that the table-building stages load no torch
runs a fresh interpreter: tests/integration/test_layout_imports.py)."""
import ast
from pathlib import Path

import pytest
import yaml

from config import sections
from config.backbones import BACKBONES
from config.params import Params

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("config", "models", "pipeline", "tasks", "tools")


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import statement of the file, at any depth (function-level included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def first_party(path: Path) -> set[str]:
    """The repository's modules (as files that exist) that `path` imports."""
    found = set()
    for name in imported_modules(path):
        if name.split(".")[0] in FIRST_PARTY and (REPO / (name.replace(".", "/") + ".py")).is_file():
            found.add(name)
    return found


def test_config_is_a_leaf():
    for path in sorted((REPO / "config").glob("*.py")):
        outside = {m for m in imported_modules(path) if m.split(".")[0] in FIRST_PARTY and not m.startswith("config")}
        assert not outside, f"{path.name} imports {outside}: config/ must import no other package of the repository"
        assert not {m for m in imported_modules(path) if m.split(".")[0] == "torch"}, path


def test_no_stage_imports_another_stage():
    for path in sorted((REPO / "tasks").glob("*.py")):
        stages = {m for m in first_party(path) if m.startswith("tasks.")}
        assert not stages, f"tasks/{path.name} imports the stage(s) {stages}: shared code belongs in pipeline/"


def test_shared_code_imports_no_stage_or_tool():
    for folder in ("pipeline", "models", "config"):
        for path in sorted((REPO / folder).glob("*.py")):
            wrong = {m for m in first_party(path) if m.split(".")[0] in ("tasks", "tools")}
            assert not wrong, f"{folder}/{path.name} imports {wrong}"


def test_models_do_not_depend_on_the_pipeline():
    for path in sorted((REPO / "models").glob("*.py")):
        wrong = {m for m in first_party(path) if m.split(".")[0] == "pipeline"}
        assert not wrong, f"models/{path.name} imports {wrong}: models/ is usable without the pipeline"


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_no_backbone_imports_another(backbone):
    others = {f"models.{b}" for b in BACKBONES if b != backbone}
    assert not first_party(REPO / "models" / f"{backbone}.py") & others


def schema_mismatches(values, defaults, path: str) -> list[str]:
    """Keys whose params.yaml value differs from the schema's default. Maps of names the user chooses
    (datasets, validate.datasets, sweep.grids) hold data, not defaults: only their schema applies."""
    if path in ("datasets", "validate.datasets", "sweep.grids", "backbones"):
        return []
    if isinstance(values, dict) and isinstance(defaults, dict):
        return [m for key, value in values.items()
                for m in schema_mismatches(value, defaults.get(key, "<no default>"), f"{path}.{key}".lstrip("."))]
    return [] if values == defaults else [f"{path}: params.yaml {values!r}, schema {defaults!r}"]


def test_params_yaml_and_the_schema_defaults_agree():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    defaults = Params.model_construct().model_dump(by_alias=True)  # every field's default, no validation
    wrong = schema_mismatches(raw, defaults, "")
    for name, values in raw["backbones"].items():
        own = {k: v for k, v in (values or {}).items() if k != "train_on"}
        wrong += schema_mismatches(own, BACKBONES[name]().model_dump(), f"backbones.{name}")
    assert not wrong, "params.yaml and config/ disagree:\n" + "\n".join(wrong)


def test_the_check_sees_a_disagreement():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["synthetic"]["n_users"] += 1
    defaults = Params.model_construct().model_dump(by_alias=True)
    assert schema_mismatches(raw, defaults, "") == [
        f"synthetic.n_users: params.yaml {raw['synthetic']['n_users']!r}, "
        f"schema {sections.SyntheticConfig().n_users!r}"]


def test_every_backbone_section_of_params_yaml_has_a_schema_and_every_schema_a_section():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert sorted(raw["backbones"]) == sorted(BACKBONES)


def packages_used(module: str) -> set[str]:
    """The repository's top-level packages that `module` (dotted) imports, transitively."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = REPO / (name.replace(".", "/") + ".py")
        if path.is_file():
            todo += sorted(first_party(path))
    return {name.split(".")[0] for name in seen}


def test_every_stage_depends_on_its_script_and_every_package_it_imports():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        module = body["cmd"].split("python -m ", 1)[1].split()[0]
        assert module == f"tasks.{name.split('@')[0]}", (
            f"stage {name} runs {module}: a stage's script is named after it")
        deps = set(body["deps"])
        assert f"{module.replace('.', '/')}.py" in deps, f"stage {name}: its script is not a dependency"
        missing = packages_used(module) - {"tasks"} - deps
        assert not missing, f"stage {name}: imports {sorted(missing)} but does not depend on them"
