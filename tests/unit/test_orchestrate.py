"""The DAG's command (tools/orchestrate.py) without Airflow: configure's edits of params.yaml, the stage
patterns, the routing policy; and the Dockerfile. (The DAG parsed and run by Airflow: tests/e2e/test_dag.py.)"""
import importlib.util
import ipaddress
import json
import re
import shutil
import subprocess
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


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, its arguments) of the Dockerfile, continuation lines joined, comments left out."""
    lines, joined = [], ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        joined += line.rstrip().removesuffix("\\") + (" " if line.rstrip().endswith("\\") else "")
        if not line.rstrip().endswith("\\"):
            lines.append(" ".join(joined.split()))
            joined = ""
    return [tuple((line.split(maxsplit=1) + [""])[:2]) for line in lines]


def readme_docker_block() -> str:
    """The bash block of the README's "## Docker" section."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("\n## Docker\n"):]
    section = section[:section.index("\n## ", 1)]
    return section[section.index("```bash\n") + 8:section.index("\n```", section.index("```bash\n"))]


def written_folders() -> set[str]:
    """The top-level folders the pipeline writes: every output and metric of dvc.yaml, the stages'
    --checkpoints, MLflow's and Optuna's stores (params.yaml), DVC's cache."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    paths = []
    for stage in stages.values():
        body = stage.get("do", stage)
        for entry in body.get("outs", []) + body.get("metrics", []):
            paths.append(entry if isinstance(entry, str) else next(iter(entry)))
        paths += re.findall(r"--checkpoints (\S+)", body["cmd"])
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for uri in (params["tracking"]["tracking_uri"], params["tracking"]["artifact_location"], params["tune"]["storage"]):
        paths.append(uri.removeprefix("sqlite:///"))
    return {path.split("/")[0] for path in paths} | {".dvc/cache"}


def test_dockerfile_installs_like_the_readme_and_ignores_data():
    docker = (REPO / "Dockerfile").read_text()
    install = docker.index('PIP_EXTRA_INDEX_URL="${TORCH_INDEX}" ./setup.sh')
    requirements, everything = (docker.index(f"COPY --chown=1000:1000 {what}")
                                for what in ("setup.sh requirements.txt", ". ."))
    assert requirements < install < everything
    assert "ARG BASE=python:3.11-slim" in docker and "useradd --create-home --uid 1000" in docker
    assert "USER 1000:1000" in docker and " git " in docker
    assert "./setup.sh" in (REPO / "README.md").read_text().splitlines()[1]
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"data/", "mlruns/", ".dvc/cache/", ".venv/"} <= set(ignored)
    assert {f"{folder}/" for folder in written_folders()} <= set(ignored)   # not sent to the builder


def test_docker_stop_reaches_the_pipeline_through_an_init():
    """tini is PID 1 and signals the whole process group (the shell, dvc, its stage); exec-form
    ENTRYPOINT and CMD (a shell form would put /bin/sh -c in front of tini)."""
    instructions = dockerfile_instructions()
    entrypoint = [args for name, args in instructions if name == "ENTRYPOINT"]
    cmd = [args for name, args in instructions if name == "CMD"]
    assert entrypoint == ['["/usr/bin/tini", "-g", "--"]'] and len(cmd) == 1
    assert json.loads(cmd[0])[:2] == ["sh", "-c"] and "dvc repro" in json.loads(cmd[0])[2]
    install = next(args for name, args in instructions if name == "RUN" and "apt-get install" in args)
    assert " tini" in install.split("apt-get install", 1)[1].split("&&")[0]


def test_dockerfile_caches_pip_downloads_and_records_the_source_commit():
    instructions = dockerfile_instructions()
    assert (REPO / "Dockerfile").read_text().startswith("# syntax=docker/dockerfile:1\n")   # BuildKit mounts
    names = [name for name, _ in instructions]
    setup = next(i for i, (name, args) in enumerate(instructions) if name == "RUN" and "./setup.sh" in args)
    assert instructions[setup][1].startswith("--mount=type=cache,target=/home/mrdib/.cache/pip,uid=1000,gid=1000 ")
    assert not any("PIP_NO_CACHE_DIR" in args for _, args in instructions)   # it would leave the cache empty
    # the commit: an ARG after the install (a new commit reinstalls nothing), in the image's environment
    commit = instructions.index(("ARG", "GIT_COMMIT=unknown"))
    assert setup < commit < names.index("ENTRYPOINT")
    assert ("ENV", 'MRDIB_GIT_COMMIT="${GIT_COMMIT:-unknown}"') in instructions[commit:]
    assert ("LABEL", 'org.opencontainers.image.revision="${GIT_COMMIT:-unknown}"') in instructions[commit:]
    builds = [line for line in readme_docker_block().splitlines() if line.startswith("docker build")]
    assert len(builds) == 2 and all("--build-arg GIT_COMMIT=$(git rev-parse HEAD)" in line for line in builds)


def test_git_commit_prefers_the_images_source_commit(monkeypatch):
    """MRDIB_GIT_COMMIT (the image's GIT_COMMIT) names the commit; the dirty flag is still git's."""
    from pipeline import tracking

    def fake_git(args, **kwargs):
        out = "0" * 40 + "\n" if args[1] == "rev-parse" else " M params.yaml\n"
        return subprocess.CompletedProcess(args, 0, stdout=out, stderr="")

    def no_git(args, **kwargs):
        raise FileNotFoundError("git")

    found = {}
    for env, git in (("", fake_git), ("abc123", fake_git), ("abc123", no_git), ("", no_git)):
        monkeypatch.setenv("MRDIB_GIT_COMMIT", env)
        monkeypatch.setattr(tracking.subprocess, "run", git)
        tracking.git_commit.cache_clear()
        found[env, git.__name__] = tracking.git_commit()
    tracking.git_commit.cache_clear()
    assert found == {("", "fake_git"): ("0" * 40, "yes"), ("abc123", "fake_git"): ("abc123", "yes"),
                     ("abc123", "no_git"): ("abc123", "unknown"), ("", "no_git"): ("unknown", "unknown")}


def test_gpu_image_has_one_cuda():
    """The GPU build keeps the python base and takes PyPI's torch, whose wheels bring CUDA: no CUDA base image."""
    docker = (REPO / "Dockerfile").read_text()
    froms = [args for name, args in dockerfile_instructions() if name == "FROM"]
    assert froms == ["${BASE}"] and "ARG BASE=python:3.11-slim" in docker
    assert "python3.11-venv" not in docker   # the apt Python that only a CUDA base needed
    cuda = [line for line in readme_docker_block().splitlines() if "mrdib:cuda ." in line or "-t mrdib:cuda" in line]
    assert len(cuda) == 1 and "--build-arg TORCH_INDEX= " in cuda[0] and "BASE=" not in cuda[0]
    assert "nvidia/cuda" not in readme_docker_block()


def test_dockerfile_installs_the_cluster_policy_where_airflow_reads_it():
    instructions = dockerfile_instructions()
    env = " ".join(args for name, args in instructions if name == "ENV")
    assert "AIRFLOW_HOME=/home/mrdib/airflow" in env
    setup = next(args for name, args in instructions if name == "RUN" and "airflow_local_settings" in args)
    assert 'cp dags/policy/airflow_local_settings.py "${AIRFLOW_HOME}/config/"' in setup
    assert 'mkdir -p' in setup and '"${AIRFLOW_HOME}/config"' in setup
    assert (REPO / "dags/policy/airflow_local_settings.py").is_file()


def test_readme_docker_runs_keep_every_folder_the_pipeline_writes():
    """Every `docker run` line mounts KEEP; KEEP has a volume for each folder the pipeline writes, and
    the Dockerfile makes each mount point as the image's user (a new named volume takes its owner)."""
    block = readme_docker_block()
    keep = re.search(r"^KEEP=\((.*?)\)$", block, re.MULTILINE | re.DOTALL).group(1).split()
    assert keep[::2] == ["-v"] * (len(keep) // 2)
    mounts = dict(volume.split(":", 1)[::-1] for volume in keep[1::2])
    assert set(mounts) == {f"/app/{folder}" for folder in written_folders()}, mounts
    assert len(set(mounts.values())) == len(mounts) and all(v.startswith("mrdib-") for v in mounts.values())
    runs = [line for line in block.splitlines() if line.startswith("docker run")]
    assert len(runs) >= 3 and all(line.startswith('docker run --rm "${KEEP[@]}" ') for line in runs)
    assert any("airflow standalone" in line for line in runs) and any("--gpus all" in line for line in runs)
    made = next(args for name, args in dockerfile_instructions() if name == "RUN" and "mkdir -p" in args)
    made = made.split("mkdir -p", 1)[1].split("&&")[0].split()
    assert written_folders() <= set(made)


def test_every_server_command_in_the_readme_binds_to_this_machine_only():
    """Servers the README starts listen on 127.0.0.1 (or publish a container's port there) unless a line
    says otherwise on purpose; a `-p 8080:8080` would open the Airflow UI to the network."""
    readme = (REPO / "README.md").read_text()
    published = [p for line in readme.splitlines() if line.startswith("docker run")
                 for p in re.findall(r"-p (\S+)", line)]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
    outside_docker = "\n".join(line for line in readme.splitlines() if not line.startswith("docker run"))
    hosts = [h for pattern in (r"--host (\S+)", r"--bind (\S+)", r"AIRFLOW__API__HOST=(\S+)")
             for h in re.findall(pattern, outside_docker)]
    # 127.0.0.1 everywhere, but in the production block, where each server names its own address on the
    # (firewalled) cluster network: a private address, never every interface (0.0.0.0)
    cluster = [ipaddress.ip_address(h) for h in hosts if h != "127.0.0.1"]
    assert "127.0.0.1" in hosts and all(a.is_private and not a.is_unspecified for a in cluster), hosts
    assert "AIRFLOW__API__HOST=127.0.0.1" in readme
