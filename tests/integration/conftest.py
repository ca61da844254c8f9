"""Fixtures of the integration layer: real short training runs shared on disk, MLflow in a temporary store."""
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAYOUT_SEEDS = (1, 2)
# (folder under the layout, run-name setting, train arguments)
LAYOUT_RUNS = [("runs", "base", ["--variant", "base"]), ("runs", "mrdib", ["--variant", "mrdib"]),
               ("ablations", "no_kl", ["--variant", "mrdib", "--ablation", "no_kl"]),
               ("ablations", "encoder_only", ["--variant", "mrdib", "--ablation", "encoder_only"])]


@pytest.fixture(scope="session")
def layout_seeds() -> tuple[int, ...]:
    """The seeds of every run in `trained_layout`."""
    return LAYOUT_SEEDS


@pytest.fixture(scope="session")
def trained_layout(tmp_path_factory, tiny_synthetic) -> Path:
    """runs/, ablations/ and reports/ (Tables 1-2) of tiny 2-epoch VBPR runs (base, mrdib, the ablations
    no_kl and encoder_only; seeds `layout_seeds`) on `tiny_synthetic`, built once per session and shared
    by test_ablate, test_report, test_reliance and test_probe_stage."""
    from tasks import ablate, table1, table2, train

    root = tmp_path_factory.mktemp("ablation_layout")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["pipeline"]["ablation_backbones"] = ["vbpr"]
    params.get("tracking", {})["enabled"] = False  # no MLflow runs in the repository's store from tests
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for folder, setting, extra in LAYOUT_RUNS:
        # as the pipeline's stages do: every seed in one process, into <out>/seed<S>/
        (ablate if "--ablation" in extra else train).main([
            "--data-dir", str(tiny_synthetic), "--backbone", "vbpr", "--seeds", *map(str, LAYOUT_SEEDS),
            "--epochs", "2", "--params", str(root / "params.yaml"), "--set", "train.progress=false",
            "--set", "train.device=cpu", "--out", str(root / folder / tiny_synthetic.name / f"vbpr-{setting}"),
            *extra])
    reports = str(root / "reports")
    table1.main(["--runs", str(root / "runs"), "--out", reports, "--bootstrap", "50"])
    table2.main(["--runs", str(root / "runs"), "--ablations", str(root / "ablations"), "--out", reports])
    return root


@pytest.fixture
def tracked_client(monkeypatch):
    """tracked_client(folder) -> an MlflowClient of a sqlite store in `folder`, set for the code under test
    by the environment (as the DAG does), tracking on."""
    from mlflow import MlflowClient

    from pipeline import tracking

    def connect(folder: Path) -> MlflowClient:
        uri = f"sqlite:///{folder}/mlflow.db"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.delenv("MRDIB_TRACKING", raising=False)
        monkeypatch.setattr(tracking, "_BROKEN", set())  # a store that failed in an earlier test is tried again
        return MlflowClient(tracking_uri=uri)

    return connect
