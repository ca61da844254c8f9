"""A real `dvc repro` of a tiny configuration in a temporary copy of the repository."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).with_name("dvc"))
TRACKED = ["dvc.yaml", "params.yaml", "config", "models", "pipeline", "tasks", ".dvc/config", ".dvc/.gitignore"]


@pytest.fixture
def workspace(tmp_path, tiny_params):
    work = tmp_path / "repo"
    work.mkdir()
    for name in TRACKED:
        source = REPO / name
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, work / name)
    tiny_params(work / "params.yaml")
    env = {k: v for k, v in os.environ.items() if k not in ("MRDIB_TRACKING", "MLFLOW_TRACKING_URI")}
    env |= {"PYTHONPATH": str(work), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(command, cwd=work, check=True, env=env)
    return work, env


def dvc(work, env, *args):
    return subprocess.run([DVC, *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)


def test_repro_runs_end_to_end_then_is_a_no_op(workspace):
    work, env = workspace
    first = dvc(work, env, "repro")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    metrics = json.loads((work / "runs/synthetic/vbpr-mrdib/seed2/metrics.json").read_text())
    assert len(metrics["test"]) == 16 and metrics["standin_features"] == []
    table = json.loads((work / "reports/table1.json").read_text())
    assert table["synthetic"]["vbpr"]["seeds"] == 2
    assert "| synthetic | vbpr | ndcg@20 |" in (work / "reports/table1.md").read_text()
    assert (work / "mlruns/mlflow.db").exists()   # every run tracked in the workspace's own store
    assert (work / "data/validated/synthetic/validation.json").exists()
    assert (work / "reports/validation/synthetic/index.html").exists()
    for variant in ("base", "mrdib"):   # equal budgets: both variants of vbpr tuned, neither of freedom
        assert json.loads((work / f"tuned/synthetic/vbpr-{variant}.json").read_text())["trials"] == 2
        assert json.loads((work / f"tuned/synthetic/freedom-{variant}.json").read_text())["trials"] == 0
    assert table["synthetic"]["vbpr"]["tuning_trials"] == {"base": 2, "mrdib": 2}
    assert "encoder only" in (work / "reports/table2.md").read_text()
    report = (work / "reports/report.md").read_text()
    assert "](plots/improvement.png)" in report and (work / "reports/plots/learning_curves.png").exists()
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)  # reports/ is complete on its own: every image inside
    assert any("tuning_synthetic_vbpr-mrdib_history" in i for i in images), images
    for image in images:
        assert not image.startswith(("/", "..")) and (work / "reports" / image).is_file(), image
    assert "## Modality reliance" in report and "| synthetic | vbpr | image | 2 |" in report  # the reliance stage

    again = dvc(work, env, "repro")
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout
    shown = dvc(work, env, "metrics", "show", "--json")
    assert shown.returncode == 0 and "reports/metrics/table1/synthetic-vbpr-recall@20.json" in shown.stdout
    assert '"change_pct"' in shown.stdout and "reports/table1.json" not in shown.stdout   # small files only

    # the README's experiment commands: a temporary experiment with one value changed, then a diff
    for command in (["git", "add", "dvc.lock"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lock"]):
        subprocess.run(command, cwd=work, check=True, env=env)
    experiment = dvc(work, env, "exp", "run", "--temp", "-S", "pipeline.bootstrap=60")
    assert experiment.returncode == 0, experiment.stdout[-3000:] + experiment.stderr[-3000:]
    assert "Running stage 'table1'" in experiment.stdout and "Running stage 'train@" not in experiment.stdout
    assert dvc(work, env, "exp", "show", "--json").returncode == 0
    diff = dvc(work, env, "metrics", "diff", "--json")
    assert diff.returncode == 0, diff.stderr

    # the real-data README's shape: `dvc exp run` of some stages in a fresh clone (its cache empty) commits
    # the experiment (it once failed at the commit, loading the report stage's output folder from the cache)
    clone = work.parent / "clone"
    subprocess.run(["git", "clone", "-q", str(work), str(clone)], check=True, env=env)
    partial = dvc(clone, env | {"PYTHONPATH": str(clone)}, "exp", "run", "-S", "tracking.enabled=false",
                  "download@synthetic")
    assert partial.returncode == 0, partial.stdout[-3000:] + partial.stderr[-3000:]
    assert "Ran experiment" in partial.stdout and (clone / "data/raw/synthetic").is_dir(), partial.stdout

    # one backbone's parameter invalidates that backbone's stages only (downstream tables follow)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["backbones"]["freedom"]["modality_weight"] = 1e-3
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(dvc(work, env, "status", "--json").stdout)
    # the report and the reliance stage read every backbone's settings (to rebuild models from best.pt):
    # they follow too
    changed = sorted(set(status) - {"report", "reliance"})
    assert changed and all("freedom" in stage for stage in changed), changed
    assert any(stage.startswith("train@synthetic-freedom") for stage in changed), changed
