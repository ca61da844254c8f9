"""The table-building stages and the configuration load no torch, no model code and no MLflow: checked in a
fresh interpreter (a subprocess: this process has long imported all three)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_table_stages_and_config_load_no_torch():
    code = ("import sys; import config.params, tasks.table1, tasks.table2, tasks.sweep_table; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'models', 'mlflow')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
