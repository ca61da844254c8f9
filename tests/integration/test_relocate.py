"""tools/relocate.py on a real MLflow store: a copied `mlruns/` serves its own artifacts again."""
import logging
import os
import shutil
import subprocess
import sys

import pytest

from config.params import load_params
from pipeline.tracking import CHAMPION, Tracker
from pipeline.training import run
from tools.relocate import main as relocate_main
from tools.relocate import relocate

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")


def load_champion(store, cwd) -> subprocess.CompletedProcess:
    """The champion of tiny-vbpr, loaded in a fresh process from `cwd`, the store given by its URI."""
    code = ("import numpy, mlflow; "
            f"mlflow.set_tracking_uri('sqlite:///{store}/mlflow.db'); "
            f"print(mlflow.pyfunc.load_model('models:/tiny-vbpr@{CHAMPION}').predict(numpy.array([0])).shape)")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")})


def test_a_copied_store_loads_its_models_after_relocation_and_warns_before(tiny_synthetic, tmp_path,
                                                                           tracked_client, caplog):
    original, copy = tmp_path / "checkout-a" / "mlruns", tmp_path / "checkout-b" / "mlruns"
    tracked_client(original)
    params = load_params("params.yaml", ["train.progress=false", "train.epochs=1"])
    run(params, tiny_synthetic, "vbpr", "base", tmp_path / "run", track=True)
    shutil.copytree(original, copy)
    shutil.rmtree(original.parent)                 # the checkout that made the store is gone
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert load_champion(copy, elsewhere).returncode != 0   # its artifacts were recorded in checkout-a

    tracked_client(copy)
    with caplog.at_level(logging.WARNING, logger="pipeline.tracking"):
        Tracker.start(params.tracking, "tiny", "probe", {"stage": "probe"}).end()
    assert "tools.relocate" in caplog.text and str(original) in caplog.text

    assert relocate(copy, dry_run=True)["runs.artifact_uri"] >= 1
    assert load_champion(copy, elsewhere).returncode != 0   # a dry run changes nothing
    relocate_main(["--store", str(copy)])
    loaded = load_champion(copy, elsewhere)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().splitlines()[-1].startswith("(1, ")
    assert not any(relocate(copy).values())        # a second pass: nothing to do


def test_relocate_refuses_a_folder_without_a_store(tmp_path):
    with pytest.raises(SystemExit, match="no MLflow store here"):
        relocate(tmp_path)
