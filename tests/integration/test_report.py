"""The report stage on real short runs: tables included, plots written as valid images, plot data."""
import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch

from config.backbones import MULTIMODAL
from config.params import load_params
from models.data import load_dataset
from pipeline.latents import LatentsUnavailable, item_latents
from pipeline.training import build_model
from tasks import report

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def reported(trained_layout, tiny_synthetic):
    """The shared layout plus one tuned file, then `tasks.report` over all of it."""
    root = trained_layout
    tuned = root / "tuned" / "tiny"
    tuned.mkdir(parents=True, exist_ok=True)
    (tuned / "vbpr-mrdib.json").write_text(json.dumps({  # the tune stage's layout (pipeline.training.read_tuned)
        "source": "optuna", "variant": "mrdib", "trials": 6, "best_value": 0.1234,
        "values": {"mrdib.alpha1": 0.001, "mrdib.alpha2": 0.05, "mrdib.alpha3": 0.0001}}))
    report.main(["--params", str(root / "params.yaml"), "--runs", str(root / "runs"),
                 "--references", str(root / "references"), "--ablations", str(root / "ablations"),
                 "--reports", str(root / "reports"), "--data-root", str(tiny_synthetic.parent),
                 "--tuned", str(root / "tuned")])
    return root


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100 and image.std() > 0  # not a blank canvas


def test_report_includes_every_table_and_section(reported):
    text = (reported / "reports" / "report.md").read_text()
    for name in ("table1.md", "table2.md"):
        assert (reported / "reports" / name).read_text().strip() in text
    for heading in ("## What was run", "## Summary", "## Table 1", "## Table 2", "## Time per epoch",
                    "## Tuning (equal budgets)", "## Plots"):
        assert heading in text
    assert "benchmarks.speed" in text and "s/epoch" not in text   # no per-epoch seconds of toy runs
    assert "datasets: tiny; backbones: vbpr; seeds: 1, 2." in text
    assert "| runs | tiny | vbpr | mrdib | 1, 2 |" in text and "| ablations | tiny | vbpr | no_kl | 1, 2 |" in text
    assert "| tiny | vbpr | mrdib | 6 | optuna | 0.1234 | alpha1 = 0.001, alpha2 = 0.05, alpha3 = 0.0001 |" in text
    summary = text.split("## Summary")[1].split("## Table 1")[0]
    table1 = json.loads((reported / "reports" / "table1.json").read_text())["tiny"]["vbpr"]
    assert f"**{table1['recall_at_20']['verdict']}**" in summary and "| tiny | vbpr | 2 | 0/0 |" in summary
    assert "STAND-IN" not in text  # the tiny dataset has real (synthetic) features


def test_plots_are_valid_images_linked_relatively(reported):
    text = (reported / "reports" / "report.md").read_text()
    for name in ("plots/improvement.png", "plots/learning_curves.png", "figures/tsne_tiny_vbpr.png"):
        assert f"]({name})" in text
        assert_png(reported / "reports" / name)
    # plots/ holds exactly the four files dvc.yaml declares one by one; varying images go to figures/
    assert sorted(p.name for p in (reported / "reports" / "plots").iterdir()) == [
        "improvement.csv", "improvement.png", "learning_curves.csv", "learning_curves.png"]
    assert not list((reported / "reports").rglob("*.tmp*"))


def test_learning_curves_csv_has_one_row_per_run_and_epoch(reported, layout_seeds):
    frame = pd.read_csv(reported / "reports" / "plots" / "learning_curves.csv")
    histories = {(v, s): json.loads((reported / "runs" / "tiny" / f"vbpr-{v}" / f"seed{s}" / "history.json")
                                    .read_text()) for v in ("base", "mrdib") for s in layout_seeds}
    assert len(frame) == sum(len(h) for h in histories.values()) == 8
    assert not frame.duplicated(["dataset", "backbone", "variant", "seed", "epoch"]).any()
    row = frame[(frame.variant == "mrdib") & (frame.seed == 2) & (frame.epoch == 2)].iloc[0]
    assert row.recall_at_20 == pytest.approx(histories["mrdib", 2][1]["valid/recall@20"])


def test_improvement_csv_matches_table1(reported):
    frame = pd.read_csv(reported / "reports" / "plots" / "improvement.csv")
    table1 = json.loads((reported / "reports" / "table1.json").read_text())["tiny"]["vbpr"]
    assert sorted(frame.metric) == ["ndcg@20", "recall@20"]
    row = frame[frame.metric == "recall@20"].iloc[0]
    assert row.improvement_pct == pytest.approx(table1["recall_at_20"]["improvement_pct"])
    assert row.ci_low_pct == pytest.approx(100 * table1["recall_at_20"]["ci_low"] / table1["recall_at_20"]["base_mean"])


@pytest.mark.parametrize("backbone", MULTIMODAL)
def test_item_latents_of_every_multimodal_backbone(backbone, tiny_synthetic):
    """Each backbone exposes a latent per modality for every item (FREEDOM through its loss); mrdib's is mu."""
    params = load_params(REPO / "params.yaml", ["train.device=cpu", "seed=3"])
    dataset = load_dataset(tiny_synthetic)
    torch.manual_seed(0)
    model = build_model(params, dataset, backbone, "mrdib", torch.device("cpu"))
    latents = item_latents(model, dataset.n_items)
    assert set(latents) == set(model.modalities) and "encode" not in vars(model)
    for z in latents.values():
        assert z.shape[0] == dataset.n_items and np.isfinite(z).all()
    if backbone == "vbpr":  # in evaluation the encoder returns mu of the projection, deterministically
        h = model.projections["text"](model.ctx.features["text"])
        assert np.allclose(latents["text"], model.mrdib.encoders["text"](h)[0].detach().numpy(), atol=1e-6)


def test_a_backbone_without_modalities_is_reported_not_fatal(tiny_synthetic):
    params = load_params(REPO / "params.yaml", ["train.device=cpu"])
    model = build_model(params, load_dataset(tiny_synthetic), "bprmf", "base", torch.device("cpu"))
    with pytest.raises(LatentsUnavailable):
        item_latents(model, 150)


def test_tsne_without_the_dataset_folder_is_a_note(reported, tmp_path):
    runs = report.load_runs(reported / "runs", ("base", "mrdib"))
    params = load_params(reported / "params.yaml")
    lines = report.tsne_plots(params, runs, ["vbpr"], (tmp_path / "nowhere", tmp_path), tmp_path, 50)
    assert len(lines) == 1 and "t-SNE tiny/vbpr skipped" in lines[0] and "does not exist" in lines[0]
    assert not list(tmp_path.glob("*.png"))


def test_ablations_alone_still_write_the_four_declared_plot_files(reported, tmp_path):
    """dvc.yaml declares reports/plots/*.csv|png one by one: without base/MRdIB pairs they hold a header
    and a note image, and the report says why."""
    reports = tmp_path / "reports"
    report.main(["--params", str(reported / "params.yaml"), "--runs", str(tmp_path / "no-runs"),
                 "--references", str(tmp_path / "no-references"), "--ablations", str(reported / "ablations"),
                 "--reports", str(reports), "--data-root", str(tmp_path), "--tuned", str(tmp_path)])
    text = (reports / "report.md").read_text()
    assert "_Improvement plot skipped:" in text and "_Learning curves skipped:" in text
    for name in ("improvement", "learning_curves"):
        assert pd.read_csv(reports / "plots" / f"{name}.csv").empty
        assert_png(reports / "plots" / f"{name}.png")
    assert list(pd.read_csv(reports / "plots" / "learning_curves.csv").columns)[:5] == [
        "dataset", "backbone", "variant", "seed", "epoch"]
