"""Table 2 from real short training runs: rows, labels, and numbers equal to the metrics.json files."""
import json
import shutil
import statistics

import pytest
import torch

from config.metrics import TABLE2
from config.sections import ABLATIONS
from tasks import table2


def hand_computed(root, seeds, setting, metric):
    """(mean, sample std) of a setting's test metric, read straight from its metrics.json files."""
    folder = "ablations" if setting in ABLATIONS else "runs"
    files = [root / folder / "tiny" / f"vbpr-{setting}" / f"seed{s}" / "metrics.json" for s in seeds]
    values = [json.loads(path.read_text())["test"][metric] for path in files]
    return statistics.mean(values), statistics.stdev(values)


def test_labels_name_the_zeroed_weights():
    """Every row of Table 2, in its order, named by what it removes and the weights it zeroes."""
    assert {setting: table2.setting_label(setting) for setting in table2.settings_in_order()} == {
        "mrdib": "MRdIB (full)", "no_kl": "w/o KL (α1=0)", "no_redundancy": "w/o L_R (α2=0)",
        "no_unique": "w/o L_U (α3=0)", "no_redundancy_unique": "w/o L_R, L_U (α2=α3=0)",
        "encoder_only": "encoder only, no MRdIB term (α1=α2=α3=0)",
        "tuning_only": "base with MRdIB's tuned values, no encoder (α1=α2=α3=0)", "base": "base (no MRdIB)"}
    assert list(table2.settings_in_order()) == ["mrdib", *ABLATIONS, "base"] and len(ABLATIONS) == 6


def test_table2_json_matches_the_metrics_files(trained_layout, layout_seeds):
    table = json.loads((trained_layout / "reports" / "table2.json").read_text())["tiny"]["vbpr"]
    assert list(table) == ["mrdib", "no_kl", "encoder_only", "base"]
    for setting in table:
        assert table[setting]["seeds"] == 2
        assert ("vs_base" in table[setting]) == (setting != "base")
        for metric in TABLE2:
            mean, std = hand_computed(trained_layout, layout_seeds, setting, metric)
            cell = table[setting][metric.replace("@", "_at_")]
            assert cell["mean"] == pytest.approx(mean) and cell["std"] == pytest.approx(std)
            full = hand_computed(trained_layout, layout_seeds, "mrdib", metric)[0]
            assert cell["change_pct"] == pytest.approx(100 * (mean / full - 1))



def test_dvc_metric_files_one_per_ablation_setting_with_table2_numbers(trained_layout):
    """reports/metrics/table2/<dataset>-<backbone>-<setting>.json: the keys of Table 1's metric files plus
    `ablated`, at Recall@20 (the metric of Table 2's intervals), the numbers of table2.json."""
    folder = trained_layout / "reports" / "metrics" / "table2"
    table = json.loads((trained_layout / "reports" / "table2.json").read_text())["tiny"]["vbpr"]
    assert sorted(p.name for p in folder.iterdir()) == ["tiny-vbpr-encoder_only.json", "tiny-vbpr-no_kl.json"]
    for setting in ("no_kl", "encoder_only"):
        values = json.loads((folder / f"tiny-vbpr-{setting}.json").read_text())
        interval = table[setting]["vs_base"]
        assert interval["metric"] == table2.INTERVAL_METRIC == "recall@20"
        assert values == {"seeds": 2, "base": table["base"]["recall_at_20"]["mean"],
                          "mrdib": table["mrdib"]["recall_at_20"]["mean"],
                          "ablated": table[setting]["recall_at_20"]["mean"], "ci_lower": interval["ci_low"],
                          "ci_upper": interval["ci_high"], "verdict": interval["verdict"]}

def test_table2_markdown_rows_in_order_with_numbers(trained_layout, layout_seeds):
    lines = (trained_layout / "reports" / "table2.md").read_text().splitlines()
    rows = [line for line in lines if line.startswith("| tiny | vbpr |")]
    assert [r.split(" | ")[2] for r in rows] == ["MRdIB (full)", "w/o KL (α1=0)",
                                                 "encoder only, no MRdIB term (α1=α2=α3=0)", "base (no MRdIB)"]
    mean, std = hand_computed(trained_layout, layout_seeds, "no_kl", "recall@20")
    full = hand_computed(trained_layout, layout_seeds, "mrdib", "recall@20")[0]
    assert f"{mean:.4f} ± {std:.4f} ({100 * (mean / full - 1):+.1f}%)" in rows[1]
    assert "Recall@10" in lines[0] and "NDCG@20" in lines[0]


def test_missing_metrics_is_an_error_naming_the_folder(trained_layout, tmp_path):
    shutil.copytree(trained_layout / "ablations", tmp_path / "ablations")
    unfinished = tmp_path / "ablations" / "tiny" / "vbpr-no_unique" / "seed1"
    unfinished.mkdir(parents=True)
    (unfinished / "train.log").write_text("")
    with pytest.raises(SystemExit, match="vbpr-no_unique/seed1: no metrics.json"):
        table2.main(["--runs", str(trained_layout / "runs"), "--ablations", str(tmp_path / "ablations"),
                     "--out", str(tmp_path / "reports")])
    assert not (tmp_path / "reports" / "table2.md").exists()


def test_a_run_whose_alphas_contradict_its_name_is_refused(trained_layout, tmp_path):
    shutil.copytree(trained_layout / "ablations", tmp_path / "ablations")
    path = tmp_path / "ablations" / "tiny" / "vbpr-no_kl" / "seed2" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["alphas"]["alpha1"] = 0.005
    path.write_text(json.dumps(metrics))
    with pytest.raises(SystemExit, match=r"vbpr-no_kl/seed2: named 'no_kl'"):
        table2.main(["--runs", str(trained_layout / "runs"), "--ablations", str(tmp_path / "ablations"),
                     "--out", str(tmp_path / "reports")])


def test_encoder_only_trains_the_encoders_without_any_mrdib_term(trained_layout):
    """The control differs from base by the layer alone: encoders in the checkpoint, only the
    backbone's loss terms in the history, and different scores than base."""
    folder = trained_layout / "ablations" / "tiny" / "vbpr-encoder_only" / "seed1"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["keep_encoder"] is True and set(metrics["alphas"].values()) == {0.0}
    history = json.loads((folder / "history.json").read_text())
    terms = {k for record in history for k in record if k.startswith("loss/")}
    assert not terms & {"loss/kl", "loss/mine", "loss/mine_critic", "loss/unique"}, terms
    state = torch.load(folder / "best.pt", weights_only=True)
    weights = state.get("model", state)
    assert any(key.startswith("mrdib.encoders.") for key in weights), list(weights)[:10]
    base = json.loads((trained_layout / "runs" / "tiny" / "vbpr-base" / "seed1" / "metrics.json").read_text())
    assert metrics["valid"] != base["valid"]


def test_tuning_only_is_the_base_model_trained_with_mrdibs_tuned_values(trained_layout, tiny_synthetic, tmp_path):
    """The tuning control: an ablation run with MRdIB's tuned file reaches exactly the metrics of the base
    variant trained with that file's learning rate and regulariser, and not those of base with its own."""
    from tasks import ablate, train

    tuned = tmp_path / "vbpr-mrdib.json"
    tuned.write_text(json.dumps({"source": "optuna", "variant": "mrdib", "trials": 3, "values": {
        "train.lr": 0.004, "backbones.vbpr.reg_weight": 3e-4,
        "mrdib.alpha1": 0.02, "mrdib.alpha2": 0.03, "mrdib.alpha3": 0.04}}))
    common = ["--data-dir", str(tiny_synthetic), "--backbone", "vbpr", "--seeds", "1", "--epochs", "2",
              "--params", str(trained_layout / "params.yaml"), "--set", "train.progress=false",
              "--set", "train.device=cpu"]
    ablate.main([*common, "--variant", "mrdib", "--ablation", "tuning_only", "--tuned", str(tuned),
                 "--out", str(tmp_path / "tuning_only")])
    train.main([*common, "--variant", "base", "--set", "train.lr=0.004", "--set", "backbones.vbpr.reg_weight=3e-4",
                "--out", str(tmp_path / "base_with_those_values")])
    control, by_hand = (json.loads((tmp_path / name / "seed1" / "metrics.json").read_text())
                        for name in ("tuning_only", "base_with_those_values"))
    assert set(control["alphas"].values()) == {0.0} and not control.get("keep_encoder")
    assert control["test"] == by_hand["test"] and control["valid"] == by_hand["valid"]
    state = torch.load(tmp_path / "tuning_only" / "seed1" / "best.pt", weights_only=True)
    assert not any(key.startswith("mrdib.") for key in state.get("model", state))
    base = json.loads((trained_layout / "runs" / "tiny" / "vbpr-base" / "seed1" / "metrics.json").read_text())
    assert control["valid"] != base["valid"]


def test_rows_against_tuning_only_when_the_control_is_there(trained_layout, tmp_path):
    """With a tuning_only group, Table 2 adds each row's interval against it. Here the control's folder is
    a copy of encoder_only's runs (all alphas 0 as tuning_only's; its record of the kept encoder removed),
    so encoder_only against it is exactly 0, MRdIB against it is the bootstrap of MRdIB - encoder_only,
    and the Markdown gains the column."""
    from pipeline.runs import load_runs, seed_user_differences
    from pipeline.stats import two_way_bootstrap

    ablations = tmp_path / "ablations"
    shutil.copytree(trained_layout / "ablations", ablations)
    shutil.copytree(ablations / "tiny" / "vbpr-encoder_only", ablations / "tiny" / "vbpr-tuning_only")
    for seed in (1, 2):  # as a tuning_only run records it: nothing of MRdIB kept
        path = ablations / "tiny" / "vbpr-tuning_only" / f"seed{seed}" / "metrics.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"keep_encoder": False}))
    table2.main(["--runs", str(trained_layout / "runs"), "--ablations", str(ablations),
                 "--out", str(tmp_path / "reports"), "--bootstrap", "200", "--seed", "3"])
    table = json.loads((tmp_path / "reports" / "table2.json").read_text())["tiny"]["vbpr"]
    assert list(table) == ["mrdib", "no_kl", "encoder_only", "tuning_only", "base"]
    assert table["encoder_only"]["vs_tuning_only"] == {"metric": "recall@20", "ci_low": 0.0, "ci_high": 0.0,
                                                       "verdict": "inconclusive"}
    control, full = load_runs(ablations, ["tuning_only"]), load_runs(trained_layout / "runs", ["mrdib"])
    low, high = two_way_bootstrap(seed_user_differences(control, full, "recall@20"), 200, 3)
    assert (table["mrdib"]["vs_tuning_only"]["ci_low"], table["mrdib"]["vs_tuning_only"]["ci_high"]) == (low, high)
    assert table["mrdib"]["vs_tuning_only"] != table["mrdib"]["vs_base"]
    assert "vs_tuning_only" not in table["tuning_only"] and "vs_tuning_only" not in table["base"]
    header = (tmp_path / "reports" / "table2.md").read_text().splitlines()[0]
    assert header.endswith("| 95% CI of R@20 − base | 95% CI of R@20 − tuning_only |")
    without = (trained_layout / "reports" / "table2.md").read_text().splitlines()[0]
    assert without.endswith("| 95% CI of R@20 − base |")


def test_a_control_that_kept_the_encoder_is_not_tuning_only(trained_layout, tmp_path):
    ablations = tmp_path / "ablations"
    shutil.copytree(trained_layout / "ablations", ablations)
    shutil.copytree(ablations / "tiny" / "vbpr-encoder_only", ablations / "tiny" / "vbpr-tuning_only")
    with pytest.raises(SystemExit, match=r"vbpr-tuning_only/seed1: named 'tuning_only' but .* records a kept"):
        table2.main(["--runs", str(trained_layout / "runs"), "--ablations", str(ablations),
                     "--out", str(tmp_path / "reports")])
