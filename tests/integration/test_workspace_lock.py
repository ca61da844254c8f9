"""tools/orchestrate.py in a subprocess: two DVC tasks of one workspace wait for each other (its lock)."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tools import orchestrate

REPO = Path(__file__).resolve().parents[2]


def test_dvc_tasks_in_one_workspace_wait_for_each_other(tmp_path, monkeypatch):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)   # the lock is .dvc/tmp/orchestrate.lock of the working directory
    with orchestrate.workspace_lock():
        other = subprocess.Popen([sys.executable, "-m", "tools.orchestrate", "configure"], cwd=tmp_path, text=True,
                                 stdout=subprocess.PIPE, env=os.environ | {"PYTHONPATH": str(REPO)})
        time.sleep(1.5)
        assert other.poll() is None   # still waiting
    assert other.wait(timeout=60) == 0 and "waiting for" in other.stdout.read()
