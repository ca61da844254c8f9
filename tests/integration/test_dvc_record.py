"""DVC's record is true: dvc.lock holds exactly the stages of dvc.yaml (after `dvc repro`, commit it)."""
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DVC = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"


def test_dvc_lock_holds_the_stages_of_dvc_yaml():
    listed = subprocess.run([DVC, "stage", "list", "--name-only"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.split()
    locked = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    assert listed, "dvc stage list printed no stage"
    assert sorted(locked) == sorted(listed), (
        f"dvc.lock is stale: only in dvc.lock {sorted(set(locked) - set(listed))}, only in dvc.yaml "
        f"{sorted(set(listed) - set(locked))}: run `dvc repro` and commit dvc.lock")
