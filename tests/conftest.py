import os
from pathlib import Path

import pytest
import torch

# Test tensors are tiny: one thread is faster than two that wait on each other (and far
# faster when the machine is busy).
torch.set_num_threads(1)
# Tests that need MLflow turn it on with their own temporary store; the rest must not write into
# the repository's mlruns/ (nor pay for it).
os.environ.setdefault("MRDIB_TRACKING", "off")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MRDIB_SHARED_DATA", REPO.parent / "shared" / "data" / "amazon"))


def write_inter(folder: Path, rows: list[tuple], header: str = "userID\titemID\tx_label", name: str = "toy") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.inter"
    path.write_text(header + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


GOOD_ROWS = [(0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 1, 0), (1, 2, 0), (1, 0, 2), (2, 2, 0), (2, 0, 1)]


@pytest.fixture
def toy_folder(tmp_path):
    write_inter(tmp_path / "toy", GOOD_ROWS)
    return tmp_path / "toy"


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A small synthetic dataset folder with features, shared by the model tests."""
    from config.sections import SyntheticConfig
    from pipeline.synthetic import generate, write_dataset

    cfg = SyntheticConfig(n_users=120, n_items=150, image_dim=48, text_dim=32, mean_interactions=10)
    out = tmp_path_factory.mktemp("data") / "tiny"
    write_dataset(out, *generate(cfg, seed=3))
    return out


def tracked_client(folder: Path, monkeypatch):
    """MLflow pointed at a store in `folder` (by the environment, as the DAG does), tracking on."""
    from mlflow import MlflowClient

    from pipeline import tracking

    uri = f"sqlite:///{folder}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MRDIB_TRACKING", raising=False)
    monkeypatch.setattr(tracking, "_BROKEN", set())  # a store that failed in an earlier test is tried again
    return MlflowClient(tracking_uri=uri)
