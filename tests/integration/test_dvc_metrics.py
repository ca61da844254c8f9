"""`dvc metrics show` and `dvc plots show` on the metric files and plots the stages write, in a scratch DVC
repository with the project's dvc.yaml: a table that fits a terminal, and a plots page that draws offline."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.io import pyplot
from tasks import reliance

REPO = Path(__file__).resolve().parents[2]
DVC = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"
# The keys every metric file shares (tasks/table1.py, table2.py, reliance.py metric_files): DVC's columns.
COLUMNS = ["Path", "ablated", "base", "change_pct", "ci_lower", "ci_upper", "mrdib", "seeds", "verdict"]


def dvc(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([DVC, *args], cwd=work, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, trained_layout, tiny_synthetic) -> Path:
    """A git + DVC repository holding the project's dvc.yaml and params.yaml, the metric files of Tables 1-2
    (written by the shared trained layout) and of the reliance stage, and small report plots."""
    work = tmp_path_factory.mktemp("dvc_metrics")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, work / name)
    shutil.copytree(trained_layout / "reports" / "metrics", work / "reports" / "metrics")
    reliance.main(["--params", str(trained_layout / "params.yaml"), "--runs", str(trained_layout / "runs"),
                   "--data-root", str(tiny_synthetic.parent), "--graphs-root", str(work / "no-graphs"),
                   "--out", str(work / "scratch" / "reliance.json"), "--markdown", str(work / "scratch" / "r.md"),
                   "--metrics", str(work / "reports" / "metrics" / "reliance")])
    plots = work / "reports" / "plots"
    plots.mkdir(parents=True)
    (plots / "improvement.csv").write_text("label,improvement_pct\ntiny/vbpr recall@20,2.5\ntiny/vbpr ndcg@20,-1.0\n")
    (plots / "learning_curves.csv").write_text("epoch,recall_at_20\n1,0.1\n2,0.2\n")
    plt = pyplot()
    for name in ("improvement.png", "learning_curves.png"):   # any small PNG
        fig = plt.figure(figsize=(1, 1))
        fig.savefig(plots / name)
        plt.close(fig)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    assert dvc(work, "init", "-q").returncode == 0
    return work


def test_metrics_show_is_a_narrow_table_of_the_shared_keys(workspace):
    shown = dvc(workspace, "metrics", "show")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == COLUMNS
    paths = sorted(line.split()[0] for line in lines[1:])
    assert paths == sorted(
        [f"reports/metrics/table1/tiny-vbpr-{m}@20.json" for m in ("recall", "ndcg")]
        + [f"reports/metrics/table2/tiny-vbpr-{s}.json" for s in ("no_kl", "encoder_only")]
        + [f"reports/metrics/reliance/tiny-vbpr-{m}.json" for m in ("image", "text")])
    assert max(map(len, lines)) <= 160, shown.stdout   # it was 28,968 characters with table1.json & co.
    as_json = json.loads(dvc(workspace, "metrics", "show", "--json").stdout)[""]["data"]
    record = as_json["reports/metrics/table1/tiny-vbpr-recall@20.json"]["data"]
    assert set(record) == {"seeds", "base", "mrdib", "change_pct", "ci_lower", "ci_upper", "verdict"}


def test_plots_page_draws_the_csv_plots_without_vega(workspace, tmp_path):
    """With docs/dvc_plots.html, DVC's page keeps its Vega scripts (online: Vega draws) and carries the
    stand-in that draws when they cannot load; the PNGs are plain images."""
    out = tmp_path / "page"
    shown = dvc(workspace, "plots", "show", "-o", str(out), "--html-template", str(REPO / "docs/dvc_plots.html"))
    assert shown.returncode == 0, shown.stderr
    page = (out / "index.html").read_text()
    assert page.count("vegaEmbed('#") == 2 and page.count("<img src=") == 2
    assert "cdn.jsdelivr.net/npm/vega@" in page
    assert page.index("cdn.jsdelivr.net/npm/vega-embed") < page.index('typeof window.vegaEmbed !== "function"')
    assert "{plot_divs}" not in page and "{scripts}" not in page
    assert sorted(p.name for p in (out / "static").iterdir()) == [
        "workspace_reports_plots_improvement.png", "workspace_reports_plots_learning_curves.png"]
