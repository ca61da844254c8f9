"""The DAG's command (tools/orchestrate.py) without Airflow: configure's edits of params.yaml, the stage
patterns, the routing policy; and the Dockerfile. (The DAG parsed and run by Airflow: tests/e2e/test_dag.py.)"""
import importlib.util
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tools import orchestrate

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "mrdib_pipeline"


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PARAMS_TEXT = """\
train:
  device: auto            # auto | cpu | cuda
pipeline:                 # what runs
  datasets: [synthetic]   # list[str]: names
  backbones: [vbpr, mmgcn]  # list[str]: backbones
  seeds: [2024, 2025]     # list[int]: seeds
tune:
  backbones: [vbpr]       # list[str]: tuned
  n_trials: 8             # int: trials
"""


def test_configure_writes_the_run_into_params_keeping_comments(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS_TEXT)
    changes = orchestrate.apply(path, {"backbones": ["vbpr"], "seeds": [7], "device": "cpu", "tune": True,
                                       "n_trials": 3, "train_queue": "gpu"}, validate=False)
    assert changes == ['pipeline.backbones: ["vbpr", "mmgcn"] -> ["vbpr"]', "pipeline.seeds: [2024, 2025] -> [7]",
                       'train.device: "auto" -> "cpu"', "tune.n_trials: 8 -> 3"]
    lines = path.read_text().splitlines()
    assert len(lines) == len(PARAMS_TEXT.splitlines())
    for key, comment in (("backbones: [vbpr]", "# list[str]: backbones"), ("seeds: [7]", "# list[int]: seeds"),
                         ("device: cpu", "# auto | cpu | cuda"), ("n_trials: 3", "# int: trials")):
        assert any(line.strip().startswith(key) and line.endswith(comment) for line in lines), (key, lines)
    assert orchestrate.apply(path, {"seeds": [7]}, validate=False) == []   # already there: untouched
    orchestrate.apply(path, {"tune": False, "n_trials": 50}, validate=False)
    assert yaml.safe_load(path.read_text())["tune"] == {"backbones": ["vbpr"], "n_trials": 0}


def test_configure_changes_only_the_lines_of_the_keys_it_sets(tmp_path):
    """On the real params.yaml: `null`s, quotes and every other line stay byte for byte (a rewritten
    file would tag every MLflow run git_dirty)."""
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    before = path.read_text().splitlines()
    orchestrate.apply(path, {"seeds": [7], "n_trials": 3, "tune": True}, validate=False)
    after = path.read_text().splitlines()
    changed = [(old, new) for old, new in zip(before, after) if old != new]
    assert len(after) == len(before) and any(": null" in line for line in after)
    assert [new.split("#")[0].strip() for _, new in changed] == ["seeds: [7]", "n_trials: 3"], changed


def test_a_parameter_params_yaml_cannot_hold_is_an_error_unless_implicit(tmp_path):
    params = yaml.safe_load(PARAMS_TEXT)
    assert "pipeline.variants" not in orchestrate.assignments({"variants": ["base", "mrdib"]}, params)
    with pytest.raises(orchestrate.OrchestrateError, match="pipeline.variants"):
        orchestrate.assignments({"variants": ["mrdib"]}, params)


def test_configure_validates_against_tasks_config(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    before = path.read_text()
    with pytest.raises(orchestrate.OrchestrateError, match="nowhere"):
        orchestrate.apply(path, {"datasets": ["nowhere"]}, validate=True)
    assert path.read_text() == before and list(tmp_path.iterdir()) == [path]


def test_patterns_are_filled_per_dataset_and_backbone():
    conf = {"datasets": ["baby", "sports"]}
    assert orchestrate.expand(["train@{dataset}-{backbone}-*", "table1"], conf, "vbpr") == [
        "train@baby-vbpr-*", "train@sports-vbpr-*", "table1"]


def test_policy_routes_only_this_dags_per_backbone_tasks():
    policy = load_module(REPO / "dags/policy/airflow_local_settings.py", "mrdib_policy")
    run = SimpleNamespace(conf={"train_queue": "gpu", "train_pool": "gpus"})
    train = SimpleNamespace(dag_id=DAG_ID, task_id="train", queue="default", pool="default_pool")
    other = SimpleNamespace(dag_id=DAG_ID, task_id="table1", queue="default", pool="default_pool")
    for ti in (train, other):
        policy.task_instance_mutation_hook(ti, run)
    policy.task_instance_mutation_hook(SimpleNamespace(dag_id=DAG_ID, task_id="train"), None)
    assert (train.queue, train.pool) == ("gpu", "gpus") and (other.queue, other.pool) == ("default", "default_pool")


def test_dockerfile_installs_like_the_readme_and_ignores_data():
    docker = (REPO / "Dockerfile").read_text()
    install = docker.index('RUN PIP_EXTRA_INDEX_URL="${TORCH_INDEX}" ./setup.sh')
    requirements, everything = (docker.index(f"COPY --chown=1000:1000 {what}")
                                for what in ("setup.sh requirements.txt", ". ."))
    assert requirements < install < everything
    assert "ARG BASE=python:3.11-slim" in docker and "useradd --create-home --uid 1000" in docker
    assert "USER 1000:1000" in docker and " git " in docker
    assert "./setup.sh" in (REPO / "README.md").read_text().splitlines()[1]
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"data/", "mlruns/", ".dvc/cache/", ".venv/"} <= set(ignored)
