"""What every layer shares: the layer markers (a test's folder is its layer), the toy and tiny datasets.

tests/unit/         pure functions: no training, no MLflow/Optuna store, no subprocess (`pytest -m unit`)
tests/integration/  training, stores, studies, stage main()s, subprocesses (`pytest -m integration`)
tests/e2e/          a real `dvc repro`, Airflow, servers (`pytest -m e2e`)

Fixtures only here and in each layer's conftest.py: a test module imports no other test module.
"""
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

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
LAYERS = ("unit", "integration", "e2e")  # registered in pytest.ini
GOOD_ROWS = [(0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 1, 0), (1, 2, 0), (1, 0, 2), (2, 2, 0), (2, 0, 1)]


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    """Mark each test with its folder's layer; a test module outside the three folders is an error."""
    for item in items:
        path = Path(item.path)
        if not path.is_relative_to(TESTS):
            continue
        layer = path.relative_to(TESTS).parts[0]
        if layer not in LAYERS:
            raise pytest.UsageError(f"{path}: a test module belongs in tests/unit/, tests/integration/ or "
                                    "tests/e2e/ (its folder is its layer, see tests/conftest.py)")
        item.add_marker(getattr(pytest.mark, layer))


def _write_inter(folder: Path, rows: list[tuple], header: str = "userID\titemID\tx_label", name: str = "toy") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.inter"
    path.write_text(header + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


@pytest.fixture
def write_inter():
    """write_inter(folder, rows, header=..., name="toy") -> the written <folder>/<name>.inter."""
    return _write_inter


@pytest.fixture
def good_rows() -> list[tuple]:
    """(userID, itemID, x_label) of a valid 3-user, 3-item dataset: the rows of `toy_folder`."""
    return list(GOOD_ROWS)


@pytest.fixture
def toy_folder(tmp_path):
    _write_inter(tmp_path / "toy", GOOD_ROWS)
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


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real Amazon datasets (../shared/data/amazon, or $MRDIB_SHARED_DATA); tests skip what is absent."""
    return Path(os.environ.get("MRDIB_SHARED_DATA", REPO.parent / "shared" / "data" / "amazon"))
