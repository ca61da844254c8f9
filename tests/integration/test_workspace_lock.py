"""tools/orchestrate.py in a subprocess: two DVC tasks of one workspace wait for each other (its lock)."""
import os
import select
import shutil
import subprocess
import sys
from pathlib import Path

from tools import orchestrate

REPO = Path(__file__).resolve().parents[2]


def test_dvc_tasks_in_one_workspace_wait_for_each_other(tmp_path, monkeypatch):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)   # the lock is .dvc/tmp/orchestrate.lock of the working directory
    with orchestrate.workspace_lock():
        other = subprocess.Popen([sys.executable, "-m", "tools.orchestrate", "configure"], cwd=tmp_path, text=True,
                                 stdout=subprocess.PIPE, env=os.environ | {"PYTHONPATH": str(REPO)})
        # its first line, while the lock is held (however long its imports take on a busy machine)
        ready, _, _ = select.select([other.stdout], [], [], 120)
        assert ready and "waiting for" in other.stdout.readline()
        assert other.poll() is None   # still waiting
    assert other.wait(timeout=60) == 0 and "params.yaml" in other.stdout.read()


def test_stage_counts_the_stages_it_runs(tmp_path):
    """A real `dvc repro --glob` in a small DVC project: a counter line before each stage DVC reaches."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  make_a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n"
        "  make_b:\n    cmd: cat a.txt > b.txt\n    deps: [a.txt]\n    outs: [b.txt]\n"
        "  other:\n    cmd: echo o > o.txt\n    outs: [o.txt]\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)

    def stage(*patterns):
        done = subprocess.run([sys.executable, "-m", "tools.orchestrate", "stage", *patterns], cwd=tmp_path,
                              text=True, capture_output=True, env=os.environ | {"PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stdout + done.stderr
        return [line for line in done.stdout.splitlines() if line.startswith(("[stage", "[upstream]"))]

    assert stage("make_*") == ["[stage 1/2] make_a", "[stage 2/2] make_b"]
    assert (tmp_path / "b.txt").read_text() == "a\n" and not (tmp_path / "o.txt").exists()
    assert stage("make_b") == ["[upstream] make_a", "[stage 1/1] make_b"]   # DVC checks the upstream stage too
