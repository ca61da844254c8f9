"""Table 1 / Table 3 collection: means, std over seeds, and the paired bootstrap interval."""
import json

import numpy as np
import pytest

from tasks.evaluate import format_table3, load_runs, main, paired_bootstrap, table1_rows
from tasks.train import save_per_user


def write_run(root, name, seed, per_user_ndcg, seconds):
    folder = root / "toy" / name / f"seed{seed}"
    folder.mkdir(parents=True)
    users = np.arange(len(per_user_ndcg))
    metrics = {m: float(per_user_ndcg.mean()) for m in
               [f"{x}@{k}" for k in (5, 10, 20, 50) for x in ("recall", "precision", "map", "ndcg")]}
    (folder / "metrics.json").write_text(json.dumps({"test": metrics, "seconds_per_epoch": seconds,
                                                     "standin_features": []}))
    save_per_user(folder / "per_user_test.npz", users, {k: per_user_ndcg for k in metrics})


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(0)
    for seed in (1, 2):
        base = rng.uniform(0, 0.5, 400)
        write_run(tmp_path, "vbpr-base", seed, base, 1.0)
        write_run(tmp_path, "vbpr-mrdib", seed, base + 0.05 + rng.normal(0, 0.01, 400), 1.1)
    return tmp_path


def test_table1_means_improvement_and_interval(runs):
    found = load_runs(runs, ("base", "mrdib"))
    assert sorted((r.variant, r.seed) for r in found) == [("base", 1), ("base", 2), ("mrdib", 1), ("mrdib", 2)]
    row = next(r for r in table1_rows(found, n_boot=300, seed=0) if r["metric"] == "ndcg@5")
    base_means = [r.metrics["test"]["ndcg@5"] for r in found if r.variant == "base"]
    assert row["base_mean"] == pytest.approx(np.mean(base_means))
    assert row["base_std"] == pytest.approx(np.std(base_means, ddof=1))
    assert row["improvement_pct"] == pytest.approx(100 * (row["mrdib_mean"] / row["base_mean"] - 1))
    assert 0.045 < row["ci_low"] < 0.05 < row["ci_high"] < 0.055


def test_no_difference_gives_an_interval_around_zero(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.uniform(0, 1, 300)
    write_run(tmp_path, "bprx-base", 1, values, 1.0)
    write_run(tmp_path, "bprx-mrdib", 1, values + rng.normal(0, 0.05, 300), 1.0)
    runs = load_runs(tmp_path, ("base", "mrdib"))
    low, high = paired_bootstrap([r for r in runs if r.variant == "base"], [r for r in runs if r.variant == "mrdib"],
                                 "ndcg@5", 500, 0)
    assert low < 0 < high


def test_tables_written(runs, tmp_path):
    main(["--runs", str(runs), "--out", str(tmp_path / "reports"), "--bootstrap", "100"])
    assert "| toy | vbpr | ndcg@20 |" in (tmp_path / "reports" / "table1.md").read_text()
    assert "+10.0%" in format_table3(load_runs(runs, ("base", "mrdib")))
