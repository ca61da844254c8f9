"""The probe stage (tasks/probe.py) on real tiny trained models: json, table, figure, MLflow, the report's section."""
import json
import shutil

import matplotlib.image
import numpy as np
import pytest
import yaml

from config.params import load_params
from tasks import probe, report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")  # inside mlflow's sqlalchemy store


@pytest.fixture(scope="module")
def probed(tmp_path_factory, tiny_synthetic, trained_layout):
    """The shared tiny layout (VBPR base, MRdIB, no_kl; 2 seeds; 2 epochs) probed, MLflow in a temporary store."""
    from pipeline import tracking

    root = trained_layout
    out = tmp_path_factory.mktemp("probe")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tracking"]["enabled"] = True
    (out / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{out}/mlflow.db")
        patch.delenv("MRDIB_TRACKING", raising=False)
        patch.setattr(tracking, "_BROKEN", set())
        probe.main(["--params", str(out / "params.yaml"), "--runs", str(root / "runs"), "--ablations",
                    str(root / "ablations"), "--references", str(root / "references"),
                    "--data-root", str(tiny_synthetic.parent), "--raw-root", str(tiny_synthetic.parent),
                    "--graphs-root", str(out / "no-graphs"), "--out", str(out / "reports" / "probe.json"),
                    "--markdown", str(out / "reports" / "probe.md"), "--figure", str(out / "reports" / "probe.png")])
    return out


def leaves(tree):
    if isinstance(tree, dict) and "mean" in tree:
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from leaves(value)


def test_probe_json_has_every_model_block_and_finite_numbers(probed, trained_layout, layout_seeds):
    result = json.loads((probed / "reports" / "probe.json").read_text())
    assert list(result["datasets"]) == ["tiny"] and list(result["skipped"]) == ["synthetic"]  # pipeline.datasets
    tiny = result["datasets"]["tiny"]
    assert tiny["probe_test"] == round(0.3 * tiny["items"]) and tiny["cca_k"] == 4
    ablations = sorted(p.name.partition("-")[2] for p in (trained_layout / "ablations" / "tiny").iterdir())
    assert "no_kl" in ablations
    assert list(tiny["models"]) == ["features", "vbpr"]
    assert list(tiny["models"]["vbpr"]) == ["base", "mrdib", *ablations]
    assert not tiny["failed"]
    for numbers in tiny["models"]["vbpr"].values():
        assert numbers["seeds"] == list(layout_seeds) and numbers["n_seeds"] == 2
        assert set(numbers["latents"]) == {"image", "text", "item"}
        for latent in numbers["latents"].values():
            assert list(latent["r2"]) == list(probe.BLOCKS)
            assert set(latent["variance_explained"]) == set(probe.SHARES)
        assert set(numbers["redundancy"]) >= {"cca_first", "cca_top_k"}
        for leaf in leaves(numbers):
            assert len(leaf["values"]) == 2 and all(np.isfinite(leaf["values"]))
            assert leaf["mean"] == pytest.approx(np.mean(leaf["values"]))
            assert leaf["std"] == pytest.approx(np.std(leaf["values"], ddof=1))
    r2 = [leaf["mean"] for m in tiny["models"].values() for s in m.values() for lat in s["latents"].values()
          for leaf in lat["r2"].values()]
    assert max(r2) <= 1.0 and min(r2) > -1.0                  # held out: a little below 0 at worst
    features = tiny["models"]["features"]["raw"]
    assert features["n_seeds"] == 0 and set(features["latents"]) == {"image", "text"}


def test_mrdib_latents_are_mu_and_base_latents_h(probed, tiny_synthetic, trained_layout, layout_seeds):
    """What was probed for a run is what encode returns for its rebuilt model (R² recomputed by hand)."""
    root = trained_layout
    run = next(r for r in probe.load_runs(root / "runs", ("mrdib",)) if r.seed == layout_seeds[0])
    params = load_params(probed / "params.yaml")
    latents = probe.model_latents(params, tiny_synthetic.parent, probed / "no-graphs", run)
    model = probe.load_run_model(params, tiny_synthetic.parent, probed / "no-graphs", run)
    h = model.projections["image"](model.ctx.features["image"])
    assert np.allclose(latents["image"], model.mrdib.encoders["image"](h)[0].detach().numpy(), atol=1e-5)
    planted = probe.planted_blocks(tiny_synthetic)
    n = len(latents["image"])
    train, test = probe.split_items(n, probe.TEST_SHARE, params.seed)
    expected = probe.ridge_probe(latents["image"], {"redundant": planted["redundant"]}, train, test,
                                 probe.folds_of(n, probe.FOLDS, params.seed))["redundant"]["r2"]
    result = json.loads((probed / "reports" / "probe.json").read_text())
    got = result["datasets"]["tiny"]["models"]["vbpr"]["mrdib"]["latents"]["image"]["r2"]["redundant"]["values"][0]
    assert got == pytest.approx(expected)


def test_probe_markdown_and_figure(probed):
    text = (probed / "reports" / "probe.md").read_text()
    assert "### tiny" in text and "| vbpr | no_kl | image | " in text and "| features | raw | image | " in text
    assert "synergy a_v·a_t" in text and "first canonical correlation" in text
    assert text.count("| vbpr | mrdib | ") == 4                 # image, text, item rows + the redundancy row
    path = probed / "reports" / "probe.png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert min(image.shape[:2]) > 300 and image.std() > 0
    assert not list((probed / "reports").glob("*.tmp*"))


def test_probe_metrics_and_files_are_in_mlflow(probed):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{probed}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([experiment.experiment_id], "tags.stage = 'probe'")
    result = json.loads((probed / "reports" / "probe.json").read_text())["datasets"]["tiny"]
    expected = result["models"]["vbpr"]["mrdib"]["latents"]["text"]["r2"]["unique_text"]["mean"]
    assert run.data.metrics["vbpr-mrdib/text/r2_unique_text"] == pytest.approx(expected)
    assert "features-raw/image/share_clutter" in run.data.metrics and "vbpr-base/cca_first" in run.data.metrics
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {"probe.json", "probe.md", "probe.png"}


def test_real_data_is_skipped_and_the_outputs_still_written(probed, tmp_path, trained_layout, tiny_synthetic):
    root = trained_layout
    raw = tmp_path / "raw" / "tiny"
    shutil.copytree(tiny_synthetic, raw)
    (raw / "item_latents.npz").unlink()                        # what a real dataset looks like
    out = tmp_path / "reports"
    probe.main(["--params", str(root / "params.yaml"), "--runs", str(root / "runs"), "--ablations",
                str(root / "ablations"), "--references", str(tmp_path / "none"), "--raw-root", str(tmp_path / "raw"),
                "--data-root", str(tmp_path / "raw"), "--out", str(out / "probe.json"),
                "--markdown", str(out / "probe.md"), "--figure", str(out / "probe.png")])
    result = json.loads((out / "probe.json").read_text())
    assert result["datasets"] == {} and set(result["skipped"]) == {"tiny", "synthetic"}
    assert "no planted structure" in result["skipped"]["tiny"]
    assert "No dataset with planted structure" in (out / "probe.md").read_text()
    assert (out / "probe.png").read_bytes()[:8] == PNG_MAGIC


def test_the_report_has_the_probe_section(probed, trained_layout):
    root = trained_layout
    reports = probed / "report_dir"
    shutil.copytree(root / "reports", reports)
    for name in ("probe.md", "probe.png"):
        shutil.copy(probed / "reports" / name, reports / name)
    report.main(["--params", str(root / "params.yaml"), "--runs", str(root / "runs"), "--references",
                 str(root / "references"), "--ablations", str(root / "ablations"), "--reports", str(reports),
                 "--tsne-backbones", ""])
    text = (reports / "report.md").read_text()
    assert "## Probe of the latents" in text and (probed / "reports" / "probe.md").read_text().strip() in text
    assert "](probe.png)" in text
