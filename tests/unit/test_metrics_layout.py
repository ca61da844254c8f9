"""What dvc.yaml declares for `dvc metrics` and `dvc plots`: small metric files with shared keys (a narrow
`dvc metrics show`), the full tables as plain outputs, plots that draw offline."""
import re
from pathlib import Path

import yaml

from tasks import table1, table2

REPO = Path(__file__).resolve().parents[2]
SHARED_KEYS = {"seeds", "base", "mrdib", "ablated", "change_pct", "ci_lower", "ci_upper", "verdict"}


def dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def stages() -> dict:
    return {name: stage.get("do", stage) for name, stage in dvc_yaml()["stages"].items()}


def test_metrics_are_the_small_files_of_reports_metrics_written_where_the_command_says():
    declared = {name: body["metrics"] for name, body in stages().items() if "metrics" in body}
    assert declared == {"table1": ["reports/metrics/table1"], "table2": ["reports/metrics/table2"],
                        "reliance": ["reports/metrics/reliance"]}
    for name, (folder,) in declared.items():
        assert re.search(rf"--metrics {folder}(\s|$)", stages()[name]["cmd"]), name
    outs = {name: body.get("outs", []) for name, body in stages().items()}
    for name in ("table1", "table2", "reliance"):   # every number, for the report and the tests
        assert f"reports/{name}.json" in outs[name]
    assert "data/prepared/${item}/filter.json" in outs["filter"]   # its own keys would widen the table


def test_every_metric_file_has_only_the_shared_keys():
    row = {"dataset": "d", "backbone": "b", "seeds": 3, "base_mean": 0.2, "mrdib_mean": 0.25, "improvement_pct": 25.0,
           "ci_low": 0.01, "ci_high": 0.09, "verdict": "better"}
    files = table1.metric_files([row | {"metric": m} for m in ("recall@20", "ndcg@20", "recall@5")])
    assert sorted(files) == ["d-b-ndcg@20.json", "d-b-recall@20.json"]   # the headline metrics only
    assert set(files["d-b-recall@20.json"]) == SHARED_KEYS - {"ablated"}
    mean = {"recall@20": {"mean": 0.2}}
    rows = [{"dataset": "d", "backbone": "b", "setting": "mrdib", "seeds": [1, 2], **mean},
            {"dataset": "d", "backbone": "b", "setting": "no_kl", "seeds": [1, 2], **mean,
             "vs_base": {"metric": "recall@20", "ci_low": -0.1, "ci_high": 0.1, "verdict": "inconclusive"}},
            {"dataset": "d", "backbone": "b", "setting": "base", "seeds": [1, 2], **mean}]
    files = table2.metric_files(rows)
    assert list(files) == ["d-b-no_kl.json"] and set(files["d-b-no_kl.json"]) == SHARED_KEYS - {"change_pct"}


def test_plots_declare_the_pngs_and_the_page_template_keeps_dvcs_placeholders():
    plots = [next(iter(p)) if isinstance(p, dict) else p for p in dvc_yaml()["plots"]]
    assert {"reports/plots/improvement.png", "reports/plots/learning_curves.png"} <= set(plots)
    page = (REPO / "docs" / "dvc_plots.html").read_text()
    assert re.findall(r"\{[a-z_]+\}", page) == ["{refresh_tag}", "{scripts}", "{plot_divs}"]   # each once
    assert page.index("{scripts}") < page.index('typeof window.vegaEmbed !== "function"')
    assert "html_template = ../docs/dvc_plots.html" in (REPO / ".dvc" / "config").read_text()  # plain `dvc plots show`
