"""Table 1 collection: means, std over seeds, the two-way (seeds x users) bootstrap, fairness checks."""
import json

import numpy as np
import pytest

from pipeline.runs import RunError, load_runs
from pipeline.stats import bootstrap_verdict as verdict
from pipeline.stats import two_way_bootstrap
from pipeline.training import save_per_user
from tasks.table1 import main, table1_rows


def write_run(root, name, seed, per_user_ndcg, trials=0):
    folder = root / "toy" / name / f"seed{seed}"
    folder.mkdir(parents=True)
    users = np.arange(len(per_user_ndcg))
    metrics = {m: float(per_user_ndcg.mean()) for m in
               [f"{x}@{k}" for k in (5, 10, 20, 50) for x in ("recall", "precision", "map", "ndcg")]}
    (folder / "metrics.json").write_text(json.dumps({"test": metrics, "standin_features": [],
                                                     "tuning": {"trials": trials, "source": "optuna"}}))
    save_per_user(folder / "per_user_test.npz", users, {k: per_user_ndcg for k in metrics})


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(0)
    for seed in (1, 2, 3):
        base = rng.uniform(0, 0.5, 400)
        write_run(tmp_path, "vbpr-base", seed, base, trials=4)
        write_run(tmp_path, "vbpr-mrdib", seed, base + 0.05 + rng.normal(0, 0.01, 400), trials=4)
    return tmp_path


def test_table1_means_improvement_interval_and_budget(runs):
    found = load_runs(runs, ("base", "mrdib"))
    assert len(found) == 6
    row = next(r for r in table1_rows(found, n_boot=300, seed=0) if r["metric"] == "ndcg@5")
    base_means = [r.metrics["test"]["ndcg@5"] for r in found if r.variant == "base"]
    assert row["base_mean"] == pytest.approx(np.mean(base_means))
    assert row["base_std"] == pytest.approx(np.std(base_means, ddof=1))
    assert row["improvement_pct"] == pytest.approx(100 * (row["mrdib_mean"] / row["base_mean"] - 1))
    assert 0.045 < row["ci_low"] < 0.05 < row["ci_high"] < 0.055
    assert row["verdict"] == "better" and row["seeds"] == 3
    assert row["tuning_trials"] == {"base": 4, "mrdib": 4}


def test_two_way_bootstrap_by_hand():
    # A constant difference: every replicate is that constant.
    assert two_way_bootstrap(np.full((3, 50), 0.2), 200, 0) == pytest.approx((0.2, 0.2))
    # Seeds disagree, users within a seed do not: a users-only bootstrap would give a zero-width
    # interval; resampling seeds must cover the seed spread (mean 0, seed values -1, 0, +1).
    differences = np.repeat(np.array([[-1.0], [0.0], [1.0]]), 40, axis=1)
    low, high = two_way_bootstrap(differences, 2000, 0)
    assert low < -0.3 and high > 0.3
    # With one seed it is the users-only bootstrap: percentiles of resampled user means.
    users = np.array([[0.0, 1.0]])
    low, high = two_way_bootstrap(users, 4000, 1)
    assert (low, high) == (0.0, 1.0)  # resampled means of {0, 1} with n=2 are 0, 0.5 or 1
    assert verdict(0.1, 0.2) == "better" and verdict(-0.2, -0.1) == "worse" and verdict(-0.1, 0.1) == "inconclusive"


def test_no_difference_gives_an_interval_around_zero(tmp_path):
    rng = np.random.default_rng(1)
    for seed in (1, 2, 3):
        values = rng.uniform(0, 1, 300)
        write_run(tmp_path, "bprx-base", seed, values)
        write_run(tmp_path, "bprx-mrdib", seed, values + rng.normal(0, 0.05, 300))
    row = table1_rows(load_runs(tmp_path, ("base", "mrdib")), 500, 0)[0]
    assert row["ci_low"] < 0 < row["ci_high"] and row["verdict"] == "inconclusive"


def test_unpaired_seeds_are_an_error(runs):
    rng = np.random.default_rng(2)
    write_run(runs, "vbpr-mrdib", 9, rng.uniform(0, 0.5, 400), trials=4)
    with pytest.raises(RunError, match=r"unpaired seeds.*\[1, 2, 3\].*\[1, 2, 3, 9\]"):
        table1_rows(load_runs(runs, ("base", "mrdib")), 100, 0)


def test_unequal_tuning_budgets_are_an_error(tmp_path):
    rng = np.random.default_rng(3)
    for seed in (1, 2):
        write_run(tmp_path, "vbpr-base", seed, rng.uniform(0, 0.5, 100), trials=0)
        write_run(tmp_path, "vbpr-mrdib", seed, rng.uniform(0, 0.5, 100), trials=8)
    with pytest.raises(RunError, match="unequal tuning budgets"):
        table1_rows(load_runs(tmp_path, ("base", "mrdib")), 100, 0)
    with pytest.raises(SystemExit, match="Table 1 refused: unequal tuning budgets"):
        main(["--runs", str(tmp_path), "--out", str(tmp_path / "reports"), "--bootstrap", "20"])
    assert not (tmp_path / "reports" / "table1.md").exists()


def test_tables_written(runs, tmp_path):
    main(["--runs", str(runs), "--out", str(tmp_path / "reports"), "--bootstrap", "100"])
    text = (tmp_path / "reports" / "table1.md").read_text()
    assert "| toy | vbpr | ndcg@20 | 3 | 4/4 |" in text and "▲" in text
    assert "12 intervals were computed: 12 ▲, 0 ▼" in text
    table = json.loads((tmp_path / "reports" / "table1.json").read_text())
    assert table["toy"]["vbpr"]["tuning_trials"] == {"base": 4, "mrdib": 4}
    assert table["toy"]["vbpr"]["seeds"] == 3
    assert not (tmp_path / "reports" / "table3.md").exists()


def test_dvc_metric_files_hold_the_headline_numbers_of_table1_json(runs, tmp_path):
    """One small file per (dataset, backbone, headline metric), the same keys in each (`dvc metrics show`
    prints a column per key), the numbers of table1.json; files of an earlier run are removed."""
    folder = tmp_path / "reports" / "metrics" / "table1"
    folder.mkdir(parents=True)
    (folder / "gone-vbpr-recall@20.json").write_text("{}")   # e.g. a backbone no longer in the pipeline
    main(["--runs", str(runs), "--out", str(tmp_path / "reports"), "--bootstrap", "100"])
    table = json.loads((tmp_path / "reports" / "table1.json").read_text())["toy"]["vbpr"]
    assert sorted(p.name for p in folder.iterdir()) == ["toy-vbpr-ndcg@20.json", "toy-vbpr-recall@20.json"]
    for metric in ("recall_at_20", "ndcg_at_20"):
        values = json.loads((folder / f"toy-vbpr-{metric.replace('_at_', '@')}.json").read_text())
        row = table[metric]
        assert values == {"seeds": 3, "base": row["base_mean"], "mrdib": row["mrdib_mean"],
                          "change_pct": row["improvement_pct"], "ci_lower": row["ci_low"],
                          "ci_upper": row["ci_high"], "verdict": row["verdict"]}


def test_metrics_folder_on_the_command_line(runs, tmp_path):
    main(["--runs", str(runs), "--out", str(tmp_path / "reports"), "--metrics", str(tmp_path / "m"),
          "--bootstrap", "20"])
    assert (tmp_path / "m" / "toy-vbpr-recall@20.json").is_file()
    assert not (tmp_path / "reports" / "metrics").exists()
