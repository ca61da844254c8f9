"""The graphs stage: files hold exactly what the backbones build in memory, and stale files are refused."""
import json
from pathlib import Path

import pytest

from config.params import load_params
from models.graph import GraphFileError, load_graphs
from models.registry import backbone_classes
from pipeline import training
from tasks import graphs as graphs_stage
from tasks import train as train_stage

REPO = Path(__file__).resolve().parents[2]
BACKBONES = backbone_classes()

GRAPH_BACKBONES = [name for name, cls in BACKBONES.items() if cls.graph_names and cls.modalities]


@pytest.mark.parametrize("backbone", GRAPH_BACKBONES)
def test_graph_file_trains_the_same_model(tiny_synthetic, tmp_path, backbone):
    graph_file = tmp_path / f"{backbone}.npz"
    graphs_stage.main(["--dataset", "tiny", "--backbone", backbone, "--data-dir", str(tiny_synthetic),
                       "--out", str(graph_file), "--params", str(REPO / "params.yaml")])
    stored = load_graphs(graph_file, _key(tiny_synthetic, backbone))
    assert set(stored) == set(BACKBONES[backbone].graph_names)
    assert all(g.nnz > 0 for g in stored.values())
    common = ["--data-dir", str(tiny_synthetic), "--backbone", backbone, "--variant", "mrdib", "--epochs", "2",
              "--params", str(REPO / "params.yaml"), "--set", "train.progress=false"]
    train_stage.main(common + ["--out", str(tmp_path / "built")])
    train_stage.main(common + ["--out", str(tmp_path / "loaded"), "--graphs", str(graph_file)])
    built, loaded = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("built", "loaded"))
    assert built["valid"] == loaded["valid"] and built["test"] == loaded["test"]


def _key(folder, backbone, overrides=()):
    params = load_params(REPO / "params.yaml", list(overrides))
    import torch

    from models.data import load_dataset
    dataset = load_dataset(folder)
    ctx = training.model_context(params, dataset, "base", torch.device("cpu"))
    return BACKBONES[backbone].graph_key(ctx, params.backbone_config(backbone))


def test_file_of_another_setting_is_refused(tiny_synthetic, tmp_path):
    graph_file = tmp_path / "freedom.npz"
    graphs_stage.main(["--dataset", "tiny", "--backbone", "freedom", "--data-dir", str(tiny_synthetic),
                       "--out", str(graph_file), "--params", str(REPO / "params.yaml")])
    with pytest.raises(GraphFileError, match="re-run the graphs stage"):
        train_stage.main(["--data-dir", str(tiny_synthetic), "--backbone", "freedom", "--epochs", "1",
                          "--params", str(REPO / "params.yaml"), "--set", "backbones.freedom.knn_k=5",
                          "--out", str(tmp_path / "run"), "--graphs", str(graph_file)])
    # a parameter the graphs do not read does not invalidate them
    assert load_graphs(graph_file, _key(tiny_synthetic, "freedom", ["backbones.freedom.dropout=0.5"]))


def test_backbone_without_graphs_gets_an_empty_file(tiny_synthetic, tmp_path):
    graph_file = tmp_path / "vbpr.npz"
    graphs_stage.main(["--dataset", "tiny", "--backbone", "vbpr", "--data-dir", str(tiny_synthetic),
                       "--out", str(graph_file), "--params", str(REPO / "params.yaml")])
    assert load_graphs(graph_file, _key(tiny_synthetic, "vbpr")) == {}
    assert not list(tmp_path.glob("*.tmp*"))


def test_corrupt_graph_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(GraphFileError, match="bad.npz"):
        load_graphs(bad, "key")
