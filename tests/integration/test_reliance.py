"""The modality-reliance diagnostic: mean replacement on every multimodal backbone (exact restore), and the
stage on the shared tiny trained layout (intact = the runs' own metrics, drop = intact - replaced)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from config.backbones import MULTIMODAL
from config.params import load_params
from models.base import FeatureTable
from models.data import load_dataset
from models.evaluation import Evaluator
from pipeline.training import build_model
from tasks import reliance, report

REPO = Path(__file__).resolve().parents[2]


def feature_tables(model, modality):
    """Every table the model reads the modality's features from at evaluation."""
    tables = [model.ctx.features[modality]]
    tables += [m.all() for n, m in model.named_modules() if isinstance(m, FeatureTable) and n.endswith(modality)]
    return tables


@pytest.mark.parametrize("backbone", MULTIMODAL)
def test_mean_replacement_flattens_every_table_and_restores_exactly(backbone, tiny_synthetic):
    params = load_params(REPO / "params.yaml", ["train.device=cpu"])
    dataset = load_dataset(tiny_synthetic)
    model = build_model(params, dataset, backbone, "mrdib", torch.device("cpu")).eval()
    users = torch.arange(dataset.n_users)
    with torch.no_grad():
        model.prepare_eval()
        before = model.full_scores(users).clone()
        originals = {m: [t.clone() for t in feature_tables(model, m)] for m in model.modalities}
        for modality in model.modalities:
            with reliance.mean_features(model, modality):
                for table, original in zip(feature_tables(model, modality), originals[modality]):
                    assert torch.allclose(table, original.mean(0, keepdim=True).expand_as(original), atol=1e-6)
                other = [m for m in model.modalities if m != modality][0]
                for table, original in zip(feature_tables(model, other), originals[other]):
                    assert torch.equal(table, original)  # one modality at a time
                model.prepare_eval()
                changed = model.full_scores(users)
            if backbone != "freedom":  # FREEDOM scores through its frozen kNN graph only: no change by design
                assert not torch.allclose(changed, before), f"{backbone}: replacing {modality} changed nothing"
            model.prepare_eval()
            assert torch.equal(model.full_scores(users), before)  # restored exactly
            for table, original in zip(feature_tables(model, modality), originals[modality]):
                assert torch.equal(table, original)


@pytest.fixture(scope="module")
def diagnosed(tmp_path_factory, tiny_synthetic, trained_layout):
    root = trained_layout
    out = tmp_path_factory.mktemp("reliance")
    reliance.main(["--params", str(root / "params.yaml"), "--runs", str(root / "runs"),
                   "--data-root", str(tiny_synthetic.parent), "--graphs-root", str(out / "no-graphs"),
                   "--out", str(out / "reliance.json"), "--markdown", str(out / "reliance.md")])
    return root, out


def test_intact_scores_are_the_runs_own_and_drops_are_differences(diagnosed, layout_seeds):
    root, out = diagnosed
    record = json.loads((out / "reliance.json").read_text())
    vbpr = record["datasets"]["tiny"]["vbpr"]
    assert record["models"] == 2 * len(layout_seeds) and not record["skipped"]
    for variant in ("base", "mrdib"):
        cell = vbpr[variant]
        assert cell["seeds"] == list(layout_seeds) and set(cell["drop"]) == {"image", "text"}
        for split in ("valid", "test"):
            for metric in ("recall@20", "ndcg@20"):
                recorded = [json.loads((root / "runs" / "tiny" / f"vbpr-{variant}" / f"seed{s}" / "metrics.json")
                                       .read_text())[split][metric] for s in layout_seeds]
                assert cell["intact"][split][metric]["mean"] == pytest.approx(np.mean(recorded), abs=1e-6)
                for modality in ("image", "text"):
                    drops = cell["per_seed_drop"][modality][split][metric]
                    assert cell["drop"][modality][split][metric]["mean"] == pytest.approx(np.mean(drops))
    diff = vbpr["mrdib_minus_base"]["image"]["test"]["recall@20"]
    expected = np.mean(vbpr["mrdib"]["per_seed_drop"]["image"]["test"]["recall@20"]) \
        - np.mean(vbpr["base"]["per_seed_drop"]["image"]["test"]["recall@20"])
    assert diff["mean"] == pytest.approx(expected) and diff["low"] <= diff["mean"] <= diff["high"]
    assert record["seconds"] / record["models"] < 30  # seconds per model, not minutes


def test_one_drop_recomputed_by_hand(diagnosed, tiny_synthetic, layout_seeds):
    root, out = diagnosed
    record = json.loads((out / "reliance.json").read_text())
    params = load_params(root / "params.yaml")
    run = next(r for r in reliance.load_runs(root / "runs", ("mrdib",)) if r.seed == layout_seeds[0])
    model = reliance.load_run_model(params, tiny_synthetic.parent, out / "no-graphs", run)
    data = load_dataset(tiny_synthetic)
    evaluator = Evaluator(data.n_users, data.n_items, data.train, {"valid": data.valid, "test": data.test})
    features = model.ctx.features["text"]
    model.ctx.features = {**model.ctx.features, "text": features.mean(0, keepdim=True).repeat(len(features), 1)}
    with torch.no_grad():
        model.prepare_eval()
        replaced = evaluator.evaluate(model.full_scores, ("test",))["test"]["recall@20"]
    drop = record["datasets"]["tiny"]["vbpr"]["mrdib"]["per_seed_drop"]["text"]["test"]["recall@20"][0]
    assert drop == pytest.approx(run.metrics["test"]["recall@20"] - replaced, abs=1e-6)



def test_dvc_metric_files_hold_the_test_recall_drop(diagnosed):
    """metrics/reliance/<dataset>-<backbone>-<modality>.json beside reliance.json: each variant's mean drop of
    test Recall@20 and the interval of MRdIB - base, under the keys of Table 1's metric files (no verdict)."""
    _, out = diagnosed
    vbpr = json.loads((out / "reliance.json").read_text())["datasets"]["tiny"]["vbpr"]
    folder = out / "metrics" / "reliance"
    assert sorted(p.name for p in folder.iterdir()) == ["tiny-vbpr-image.json", "tiny-vbpr-text.json"]
    for modality in ("image", "text"):
        values = json.loads((folder / f"tiny-vbpr-{modality}.json").read_text())
        interval = vbpr["mrdib_minus_base"][modality]["test"]["recall@20"]
        assert values == {"seeds": 2, "base": vbpr["base"]["drop"][modality]["test"]["recall@20"]["mean"],
                          "mrdib": vbpr["mrdib"]["drop"][modality]["test"]["recall@20"]["mean"],
                          "ci_lower": interval["low"], "ci_upper": interval["high"]}

def test_markdown_and_report_section(diagnosed):
    _, out = diagnosed
    text = (out / "reliance.md").read_text()
    assert "| tiny | vbpr | image | 2 |" in text and "| tiny | vbpr | text | 2 |" in text
    section = report.reliance_section(out)
    assert "Drop = metric with every feature intact" in section and "| tiny | vbpr | image |" in section
    assert "not found" in report.reliance_section(out / "absent")


def test_no_runs_gives_an_empty_record(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    reliance.main(["--params", str(tmp_path / "params.yaml"), "--runs", str(tmp_path / "runs"),
                   "--out", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")])
    assert json.loads((tmp_path / "r.json").read_text())["models"] == 0
    assert "No multimodal runs" in (tmp_path / "r.md").read_text()
