"""MLflow tracking on real sqlite stores in temporary folders: runs, registry, champion, failures."""
import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pipeline.tracking as tracking
from config.params import load_params
from pipeline.tracking import CHAMPION, Tracker
from pipeline.training import run, with_values
from tasks.train import main as train_main
from tools.registered import main as registered_main

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")  # inside mlflow's sqlalchemy store


def scorer_items(folder: Path) -> int:
    """The dataset's item count, from its interactions file."""
    import pandas as pd

    return int(pd.read_csv(next(folder.glob("*.inter")), sep="\t")["itemID"].max()) + 1


def params(*overrides):
    return load_params(PARAMS, ["train.progress=false", "train.epochs=2", *overrides])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("mlruns")


@pytest.fixture
def client(store, tracked_client):
    return tracked_client(store)


def git(folder, *args) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=folder, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def commit_of(monkeypatch, tmp_path):
    """commit_of(folder): git_commit() now reads the repository at `folder` (its cache cleared then and after)."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above tmp_path is found
    monkeypatch.delenv("MRDIB_GIT_COMMIT", raising=False)  # set inside the Docker image: the image's commit wins

    def point(folder):
        monkeypatch.setattr(tracking, "REPO", folder)
        tracking.git_commit.cache_clear()

    yield point
    tracking.git_commit.cache_clear()


@pytest.fixture
def known_repo(tmp_path):
    """A git repository with one commit (one tracked file); returns (folder, its HEAD)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "tracked.txt").write_text("one\n")
    git(repo, "init", "-q")
    git(repo, "add", "tracked.txt")
    git(repo, "commit", "-qm", "one")
    return repo, git(repo, "rev-parse", "HEAD")


def test_a_training_run_is_logged_and_found_by_its_tags(tiny_synthetic, tmp_path, client, store, monkeypatch,
                                                         known_repo, commit_of):
    repo, head = known_repo
    commit_of(repo)   # the run records the commit of the code it ran: here a repository whose HEAD is known
    monkeypatch.setenv("MRDIB_AIRFLOW_RUN_ID", "manual__1")  # what tools/orchestrate.py sets inside a DAG run
    metrics = run(params(), tiny_synthetic, "vbpr", "mrdib", tmp_path / "run", track=True)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment.artifact_location.startswith((store / "artifacts").as_uri())  # beside the db, not the repo
    found = client.search_runs([experiment.experiment_id], "tags.backbone = 'vbpr' and tags.variant = 'mrdib' and "
                               "tags.dataset = 'tiny' and tags.seed = '2024' and tags.stage = 'train'")
    (logged,) = found   # one training run, logged once
    tags, logged_params, logged_metrics = logged.data.tags, logged.data.params, logged.data.metrics
    assert logged.info.status == "FINISHED"
    assert tags["standin_features"] == "no" and tags["device"] == "cpu" and tags["airflow_run_id"] == "manual__1"
    assert tags["dvc_data_version"] == hashlib.md5((tiny_synthetic / "tiny.inter").read_bytes()).hexdigest()
    assert tags["git_commit"] == tags["mlflow.source.git.commit"] == head and tags["git_dirty"] == "no"
    assert float(logged_params["mrdib.alpha2"]) == params().mrdib.alpha2 and logged_params["train.epochs"] == "2"
    assert "backbones.vbpr.reg_weight" in logged_params and logged_params["seed"] == "2024"
    assert logged_metrics["test_recall_at_5"] == pytest.approx(metrics["test"]["recall@5"])
    assert logged_metrics["valid_recall_at_20"] == pytest.approx(metrics["valid"]["recall@20"])
    run_id = logged.info.run_id
    for term in ("loss/bpr", "loss/kl", "loss/mine", "loss/unique", "valid/recall_at_20"):
        assert [m.step for m in client.get_metric_history(run_id, term)] == [1, 2], term
    assert {"learning_curve.png", "history.json", "params.json", "metrics.json"} <= \
        {a.path for a in client.list_artifacts(run_id)}
    version = next(v for v in client.search_model_versions("name='tiny-vbpr'") if v.run_id == run_id)
    assert version.tags["variant"] == "mrdib" and version.tags["seed"] == "2024"

    import mlflow.models
    import mlflow.pytorch

    uri = f"models:/tiny-vbpr/{version.version}"
    scorer = mlflow.pytorch.load_model(uri)
    assert scorer(torch.tensor([0, 1])).shape == (2, scorer.model.ctx.n_items)
    assert mlflow.models.get_model_info(uri).signature.inputs.to_dict()[0]["tensor-spec"]["dtype"] == "int64"


def test_registry_keeps_versions_and_champion_moves_to_a_better_validation_score(tiny_synthetic, tmp_path,
                                                                               client, capsys):
    run(params(), tiny_synthetic, "vbpr", "base", tmp_path / "base", track=True)
    run(params("seed=7"), tiny_synthetic, "vbpr", "mrdib", tmp_path / "mrdib", track=True)
    name, metric = "tiny-vbpr", "recall@20"

    def scores():
        return {str(v.version): float(v.tags["valid_score"]) for v in client.search_model_versions(f"name='{name}'")}

    def champion():
        return str(client.get_registered_model(name).aliases[CHAMPION])

    assert len(scores()) >= 2
    assert scores()[champion()] == max(scores().values())
    source = client.search_model_versions(f"name='{name}'")[0].source
    # a better validation score arrives: the alias moves; a worse one or a tie: it stays
    for offset, moves in ((0.5, True), (-1.0, False), (0.0, False)):
        before, best = champion(), max(scores().values())
        extra = Tracker.start(params().tracking, "tiny", f"offset{offset}", {"variant": "mrdib", "seed": "99"})
        version = extra.register(source, name, {"variant": "mrdib", "seed": 99}, metric, best + offset)
        extra.end()
        assert champion() == (version if moves else before), offset

    # the champion loads from any directory, without this repository on the path: its code was logged with it
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    code = ("import sys, numpy, mlflow; assert not any(p.endswith('main') for p in sys.path[1:]); "
            f"model = mlflow.pyfunc.load_model('models:/{name}@{CHAMPION}'); "
            "print(model.predict(numpy.array([0, 1])).shape)")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=outside, capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().splitlines()[-1] == f"(2, {scorer_items(tiny_synthetic)})"

    registered_main(["--dataset", "tiny", "--out", str(tmp_path / "registered.md")])
    table = (tmp_path / "registered.md").read_text()
    assert "## tiny-vbpr" in table and f"({CHAMPION})" in table and "mrdib vs base" in table
    assert "| base |" in table and "| mrdib |" in table
    assert json.loads((tmp_path / "registered.json").read_text())["tiny-vbpr"]


def test_an_ablation_is_named_and_tagged_as_one_and_never_registered(tiny_synthetic, tmp_path, client):
    """An ablation must not win `synthetic-<backbone>@champion`, nor look like the full MRdIB run."""
    train_main(["--data-dir", str(tiny_synthetic), "--backbone", "vbpr", "--variant", "mrdib", "--seed", "31",
                "--ablation", "no_kl", "--epochs", "2", "--out", str(tmp_path / "ablation"),
                "--params", str(PARAMS), "--set", "train.progress=false"])
    experiment = client.get_experiment_by_name("tiny")
    (found,) = client.search_runs([experiment.experiment_id], "tags.seed = '31'")
    assert found.info.run_name == "vbpr-mrdib-no_kl-seed31"
    assert found.data.tags["stage"] == "ablate" and found.data.tags["ablation"] == "no_kl"
    versions = client.search_model_versions("name='tiny-vbpr'")
    assert not [v for v in versions if v.run_id == found.info.run_id]


def test_git_commit_is_the_head_with_its_dirty_flag_and_unknown_outside_a_repository(known_repo, commit_of,
                                                                                   tmp_path):
    repo, head = known_repo
    commit_of(repo)
    assert tracking.git_commit() == (head, "no")
    (repo / "tracked.txt").write_text("two\n")   # a change to a tracked file
    (repo / "untracked.txt").write_text("")       # untracked files do not count
    commit_of(repo)
    assert tracking.git_commit() == (head, "yes")
    outside = tmp_path / "not-a-repository"
    outside.mkdir()
    commit_of(outside)
    assert tracking.git_commit() == ("unknown", "unknown")   # the documented fallback


@pytest.mark.parametrize("problem", ["unreachable", "locked"])
def test_mlflow_never_breaks_training(problem, tiny_synthetic, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(tracking, "_BROKEN", set())
    monkeypatch.delenv("MRDIB_TRACKING", raising=False)
    lock = None
    if problem == "unreachable":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    else:
        database = tmp_path / "locked.db"
        lock = sqlite3.connect(database, isolation_level=None)
        lock.execute("CREATE TABLE held (x)")
        lock.execute("BEGIN EXCLUSIVE")  # another process holds the store
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{database}")
    with caplog.at_level(logging.WARNING, logger="pipeline.tracking"):
        metrics = run(params(), tiny_synthetic, "vbpr", "mrdib", tmp_path / "run", track=True)
    if lock is not None:
        lock.close()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["valid"] == metrics["valid"]
    warnings = [r for r in caplog.records if r.name == "pipeline.tracking" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "training goes on" in warnings[0].getMessage()


def test_a_background_start_gives_the_run_a_foreground_start_gives(tiny_synthetic, client):
    """tasks.train starts its run in a thread while the first epoch trains: same tags, params, files, metrics."""
    from pipeline.tracking import start_training_run

    def logged(background: bool) -> tuple:
        tracker = start_training_run(params(), dataset="tiny", data_dir=tiny_synthetic, backbone="vbpr",
                                     variant="mrdib", device="cpu", standin=[], run_name=f"thread-{background}",
                                     extra_tags={"probe_mode": str(background)}, background=background)
        assert (tracker._starting is not None) == background   # a thread only when asked
        tracker.log_epoch(1, {"epoch": 1, "seconds": 0.5, "loss/bpr": 0.69, "valid/recall@20": 0.1})
        tracker.end()
        assert tracker._starting is None     # whatever ran in the thread was waited for
        run = client.get_run(tracker.run_id)
        tags = {k: v for k, v in run.data.tags.items() if k not in ("probe_mode", "mlflow.runName")}
        files = sorted(a.path for a in client.list_artifacts(run.info.run_id))
        snapshot = json.loads(Path(client.download_artifacts(run.info.run_id, "params.json")).read_text())
        return run.info.status, tags, run.data.params, run.data.metrics, files, snapshot

    foreground, background = logged(False), logged(True)
    assert background == foreground
    assert foreground[0] == "FINISHED"
    assert foreground[3] == {"epoch_seconds": 0.5, "loss/bpr": 0.69, "valid/recall_at_20": 0.1}
    assert foreground[4] == ["params.json"] and foreground[5]["seed"] == params().seed


def test_train_takes_each_variants_tuned_values_and_records_the_budget(tiny_synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("MRDIB_TRACKING", "off")
    shared = {"train.lr": 0.004, "backbones.vbpr.reg_weight": 0.03}
    files = {"mrdib": shared | {"mrdib.alpha1": 0.02, "mrdib.alpha2": 0.003, "mrdib.alpha3": 0.0007}, "base": shared}
    for variant, values in files.items():
        tuned = tmp_path / f"vbpr-{variant}.json"
        tuned.write_text(json.dumps({"source": "optuna", "variant": variant, "trials": 5, "values": values}))
        train_main(["--data-dir", str(tiny_synthetic), "--backbone", "vbpr", "--variant", variant, "--epochs", "1",
                    "--out", str(tmp_path / variant), "--tuned", str(tuned), "--set", "train.progress=false"])
    mrdib = json.loads((tmp_path / "mrdib" / "metrics.json").read_text())
    base = json.loads((tmp_path / "base" / "metrics.json").read_text())
    assert mrdib["alphas"] == {"alpha1": 0.02, "alpha2": 0.003, "alpha3": 0.0007} and base["alphas"] is None
    assert mrdib["tuning"]["trials"] == base["tuning"]["trials"] == 5
    assert base["tuning"]["values"] == shared
    # A tuned file of the other variant is refused: it would silently mix budgets.
    with pytest.raises(SystemExit, match="tuned for variant 'mrdib', expected 'base'"):
        train_main(["--data-dir", str(tiny_synthetic), "--backbone", "vbpr", "--variant", "base", "--epochs", "1",
                    "--out", str(tmp_path / "wrong"), "--tuned", str(tmp_path / "vbpr-mrdib.json")])


def test_tuned_train_values_win_over_dataset_overrides():
    tuned = with_values(params(), {"train.lr": 0.0123, "backbones.vbpr.reg_weight": 0.5})
    assert tuned.for_dataset("synthetic").train.lr == 0.0123
    assert tuned.backbone_config("vbpr").reg_weight == 0.5


def test_relative_store_paths_resolve_against_the_repository(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri, artifacts = tracking.resolve_store(params().tracking)
    assert uri == f"sqlite:///{REPO / 'mlruns' / 'mlflow.db'}" and artifacts == (REPO / "mlruns" / "artifacts").as_uri()
    assert not tracking.tracking_enabled(params("tracking.enabled=false").tracking)
    monkeypatch.setenv("MRDIB_TRACKING", "off")
    assert not tracking.tracking_enabled(params().tracking)
