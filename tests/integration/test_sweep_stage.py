"""The sweep stages on a tiny grid: one backbone's part (tasks/sweep.py), then the table (tasks/sweep_table.py)."""
import json

import numpy as np
import pytest

from pipeline.stats import paired_verdict as verdict

REPO_PARAMS = "params.yaml"


def test_tiny_sweep_end_to_end(tmp_path):
    """The DVC stages' path: one backbone's part (sweep@vbpr), then sweep_table."""
    from tasks import sweep, sweep_table

    base = "{n_users: 60, interactions_per_item: 6.0, nonlinearity: 0.0, image_dim: 16, text_dim: 16}"
    sets = ["--params", REPO_PARAMS, "--set", f"sweep.grids.small.base={base}", "--set", "sweep.grid=small",
            "--set", "sweep.grids.small.vary={nonlinearity: [1.0]}", "--set", "sweep.backbones=[vbpr]",
            "--set", "sweep.seeds=[11, 12]", "--set", "sweep.epochs=2"]
    out = tmp_path / "reports"
    sweep.main(sets + ["--backbone", "vbpr", "--workers", "1", "--tuned-dir", str(tmp_path / "no-tuned"),
                       "--json", str(out / "sweep" / "vbpr.json")])
    assert not (out / "sweep.md").exists()   # a part writes its json only
    sweep_table.main(sets + ["--parts", str(out / "sweep"), "--json", str(out / "sweep.json"),
                             "--markdown", str(out / "sweep.md"), "--plot", str(out / "plots" / "sweep.png")])
    record = json.loads((out / "sweep.json").read_text())
    assert record["seeds"] == [11, 12] and record["backbones"] == ["vbpr"] and record["epochs"] == 2
    assert record["budget"]["vbpr"]["trials"] == {"base": 0, "mrdib": 0}
    assert [p["label"] for p in record["points"]] == ["base", "nonlinearity=1.0"]
    for point in record["points"]:
        res = point["results"]["vbpr"]
        for metric in ("recall@20", "ndcg@20"):
            cell = res[metric]
            assert len(cell["base"]) == len(cell["mrdib"]) == 2
            assert cell["diff"]["diffs"] == pytest.approx(np.subtract(cell["mrdib"], cell["base"]).tolist())
            assert cell["diff"]["low"] <= cell["diff"]["mean"] <= cell["diff"]["high"]
            assert cell["verdict"] == verdict(cell["diff"])   # the verdict its own interval gives
        assert max(res["epochs_run"]["base"] + res["epochs_run"]["mrdib"]) <= 2
    assert record["points"][1]["synthetic"]["nonlinearity"] == 1.0
    text = (out / "sweep.md").read_text()
    assert "| nonlinearity=1.0 | vbpr |" in text and "untuned (equal budget 0)" in text and "60 users" in text
    assert "](plots/sweep.png)" in text and (out / "plots" / "sweep.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="stale"):   # a part of another grid is refused
        sweep_table.main(sets + ["--set", "sweep.epochs=3", "--parts", str(out / "sweep"),
                                 "--json", str(tmp_path / "x.json")])
