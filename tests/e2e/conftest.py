"""Fixtures of the e2e layer."""
from pathlib import Path

import pytest
import yaml


def _tiny_params(path: Path) -> None:
    """params.yaml at `path` cut to the tiny configuration of test_pipeline (and test_dag's real runs)."""
    params = yaml.safe_load(path.read_text())
    params["synthetic"].update(n_users=80, n_items=120, image_dim=16, text_dim=8, mean_interactions=8)
    params["datasets"]["synthetic"]["train"].update(epochs=2, batch_size=256)
    params["validate"]["datasets"]["synthetic"].update(image_dim=16, text_dim=8)
    params["tune"].update(backbones=["vbpr"], n_trials=2, epochs=2, startup_trials=1)
    params["pipeline"].update(backbones=["vbpr", "freedom"], references=["pop"], seeds=[1, 2], bootstrap=50,
                              ablation_backbones=["vbpr"], ablations=["encoder_only"])
    params["sweep"].update(backbones=["vbpr"], seeds=[1, 2], epochs=2, workers=1, grid="small")
    params["sweep"]["grids"]["small"] = {"base": {"n_users": 60, "interactions_per_item": 6.0},
                                         "vary": {"nonlinearity": [1.0]}}
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="session")
def tiny_params():
    """tiny_params(path): rewrite the params.yaml at `path` to a configuration `dvc repro` runs in minutes."""
    return _tiny_params
