"""The tune stage: validation only, nested MLflow trials, pruning, a killed study resumed, untuned backbones."""
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from config.params import load_params
from models.evaluation import Evaluator
from pipeline.tracking import Tracker
from pipeline.tuning import Objective, TrialRunner, tune
from tasks.tune import main as tune_main

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")  # inside mlflow's sqlalchemy store


def params(tmp_path, *overrides):
    return load_params(PARAMS, ["tune.n_trials=3", "tune.epochs=3", "tune.startup_trials=2",
                                "tune.pruner_startup_trials=1", "tune.pruner_warmup_epochs=1",
                                f"tune.storage=sqlite:///{tmp_path}/optuna.db", *overrides])


@pytest.fixture
def client(tmp_path, tracked_client):
    return tracked_client(tmp_path)


def keys(payload) -> list[str]:
    """Every key of a nested JSON payload."""
    if isinstance(payload, dict):
        return [k for key, value in payload.items() for k in [str(key), *keys(value)]]
    return [k for value in payload for k in keys(value)] if isinstance(payload, list) else []


def test_study_sees_validation_only_and_nests_trials_in_mlflow(tiny_synthetic, tmp_path, client, monkeypatch):
    splits, original = [], Evaluator.__init__

    def spy(self, n_users, n_items, train, heldout, *args, **kwargs):
        splits.append(sorted(heldout))
        original(self, n_users, n_items, train, heldout, *args, **kwargs)

    monkeypatch.setattr(Evaluator, "__init__", spy)
    out = tmp_path / "tuned" / "tiny" / "vbpr.json"
    result = tune(params(tmp_path), tiny_synthetic, "vbpr", out)
    assert splits and all(s == ["valid"] for s in splits)          # the test split is never evaluated
    assert not any("test" in k for k in keys(json.loads(out.read_text())))
    assert result["source"] == "optuna" and result["n_trials"]["complete"] + result["n_trials"]["pruned"] == 3
    assert all(1e-4 <= result["values"][f"mrdib.{a}"] <= 1e-1 for a in ("alpha1", "alpha2", "alpha3"))
    assert 1e-4 <= result["values"]["train.lr"] <= 3e-2 and "backbones.vbpr.reg_weight" in result["values"]
    assert result["variant"] == "mrdib" and result["trials"] == 3 and result["valid_metric"] == "recall@20"
    assert (tmp_path / "tuned" / "tiny" / "vbpr_history.png").stat().st_size > 0
    assert (tmp_path / "tuned" / "tiny" / "vbpr_importances.png").stat().st_size > 0

    experiment = client.get_experiment_by_name("tiny").experiment_id
    study = f"tags.optuna_study = '{result['study_name']}' and tags.stage = 'tune'"
    parent, = client.search_runs([experiment], study + " and tags.optuna_role = 'study'")
    trials = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(trials) == 3 and {t.data.tags["trial_state"] for t in trials} <= {"COMPLETE", "PRUNED"}
    for logged in [parent, *trials]:
        assert not any("test" in name for name in logged.data.metrics), logged.data.metrics
    assert parent.data.metrics["best_valid_recall_at_20"] == pytest.approx(result["best_value"])
    assert any(a.path == "vbpr_history.png" for a in client.list_artifacts(parent.info.run_id))

    again = tune(params(tmp_path), tiny_synthetic, "vbpr", out)  # finished study: nothing more runs
    assert again["study_name"] == result["study_name"] and again["n_trials"] == result["n_trials"]
    assert len(client.search_runs([experiment], study)) == 1 + 3   # the parent continued, no new trial run
    parents = client.search_runs([experiment], study + " and tags.optuna_role = 'study'")
    assert [r.info.run_id for r in parents] == [parent.info.run_id] and parents[0].info.status == "FINISHED"


class PruneFromEpoch2(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return trial.last_step is not None and trial.last_step >= 2


def test_a_pruned_trial_stops_early_and_is_tagged_pruned(tiny_synthetic, tmp_path, client):
    runner = TrialRunner.load(params(tmp_path, "tune.epochs=6"), tiny_synthetic, "vbpr")
    assert len(runner.dataset.test) == 0 and len(runner.dataset.valid) > 0
    parent = Tracker.start(runner.params.tracking, "tiny", "prune-check", {"stage": "tune"})
    study = optuna.create_study(direction="maximize", pruner=PruneFromEpoch2(),
                                sampler=optuna.samplers.TPESampler(seed=1))
    study.optimize(Objective(runner, "prune-check", parent), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["epochs_run"] == 2
    nested, = client.search_runs([parent.experiment_id], f"tags.mlflow.parentRunId = '{parent.run_id}'")
    assert nested.data.tags["trial_state"] == "PRUNED"
    assert [m.step for m in client.get_metric_history(nested.info.run_id, "loss/kl")] == [1, 2]


def trial_states(database) -> list[tuple[int, str]]:
    if not database.exists():
        return []
    with sqlite3.connect(database, timeout=10) as connection:
        try:
            return connection.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
        except sqlite3.OperationalError:  # the schema is not written yet
            return []


def reported_epochs(database, number: int) -> int:
    """How many epochs trial `number` has reported (its intermediate values) so far."""
    with sqlite3.connect(database, timeout=10) as connection:
        try:
            return connection.execute("SELECT COUNT(*) FROM trial_intermediate_values JOIN trials USING (trial_id) "
                                      "WHERE trials.number = ?", (number,)).fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def test_a_killed_study_resumes_where_it_stopped(tiny_synthetic, tmp_path):
    """Killed inside trial 1 (after trial 0 completed): the resumed study keeps trial 0, marks trial 1
    failed and runs its parameters again, and ends with the full budget."""
    database, out = tmp_path / "optuna.db", tmp_path / "tuned.json"
    command = [sys.executable, "-m", "tasks.tune", "--dataset", "tiny", "--data-dir", str(tiny_synthetic),
               "--backbone", "vbpr", "--out", str(out), "--params", str(PARAMS),
               "--set", "tune.n_trials=3", "--set", "tune.epochs=8", "--set", "train.patience=100",
               "--set", "tune.startup_trials=2", "--set", "tune.pruner_startup_trials=1",
               "--set", "tune.pruner_warmup_epochs=4", "--set", f"tune.storage=sqlite:///{database}"]
    env = os.environ | {"MRDIB_TRACKING": "off", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    # Kill once trial 1 has run an epoch: 7 more to go and no pruning before epoch 5, so the kill lands
    # inside the trial, never between two.
    while not (trial_states(database)[:2] == [(0, "COMPLETE"), (1, "RUNNING")] and reported_epochs(database, 1)):
        assert first.poll() is None and time.monotonic() < deadline, "the study ended before it could be killed"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    killed = trial_states(database)
    assert killed == [(0, "COMPLETE"), (1, "RUNNING")] and not out.exists(), killed   # interrupted mid-trial

    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = trial_states(database)
    assert resumed[:2] == [(0, "COMPLETE"), (1, "FAIL")]          # the first trial is kept, not rerun
    assert [state for _, state in resumed].count("FAIL") == 1
    assert sum(state in ("COMPLETE", "PRUNED") for _, state in resumed) == 3
    assert re.search(r"trial 1 of \S+ was interrupted", second.stderr), second.stderr[-3000:]
    (name,) = optuna.get_all_study_names(f"sqlite:///{database}")
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{database}").trials
    retry = trials[2]   # the failed trial's parameters, tried again first
    assert retry.user_attrs["retry_of"] == 1 and retry.params == trials[1].params
    tuned = json.loads(out.read_text())
    assert tuned["n_trials"]["complete"] + tuned["n_trials"]["pruned"] == 3


def test_base_variant_is_tuned_with_the_same_budget_and_shared_space(tiny_synthetic, tmp_path):
    out = tmp_path / "tuned" / "tiny" / "vbpr-base.json"
    result = tune(params(tmp_path), tiny_synthetic, "vbpr", out, variant="base")
    assert result["variant"] == "base" and result["trials"] == 3
    assert set(result["values"]) == {"train.lr", "backbones.vbpr.reg_weight"}   # no alphas for base
    assert "-base-" in result["study_name"]


def test_untuned_backbone_gets_a_zero_budget_for_both_variants(tmp_path):
    defaults = load_params(PARAMS)
    for backbone, extra in (("mmgcn", []), ("vbpr", ["--set", "tune.n_trials=0"])):
        for variant in ("base", "mrdib"):
            out = tmp_path / "tuned" / f"{backbone}-{variant}.json"
            tune_main(["--dataset", "synthetic", "--data-dir", str(tmp_path / "not-needed"), "--backbone", backbone,
                       "--variant", variant, "--out", str(out), *extra])
            tuned = json.loads(out.read_text())
            assert tuned["source"] == "params.yaml" and tuned["trials"] == 0 and tuned["variant"] == variant
            alphas = {f"mrdib.{a}": getattr(defaults.mrdib, a) for a in ("alpha1", "alpha2", "alpha3")}
            assert tuned["values"] == (alphas if variant == "mrdib" else {})
            assert (tmp_path / "tuned" / f"{backbone}-{variant}_history.png").exists()
            assert (tmp_path / "tuned" / f"{backbone}-{variant}_importances.png").exists()


def test_search_space_and_its_checks():
    from config.params import ParamsError
    from pipeline.tuning import search_space

    loaded = load_params(PARAMS, ["tune.tune_lr=true", "tune.tune_reg=true"])
    space = search_space(loaded, "vbpr")
    assert space == {"alpha1": ("mrdib.alpha1", 1e-4, 1e-1), "alpha2": ("mrdib.alpha2", 1e-4, 1e-1),
                     "alpha3": ("mrdib.alpha3", 1e-4, 1e-1), "lr": ("train.lr", 1e-4, 3e-2),
                     "reg_weight": ("backbones.vbpr.reg_weight", 1e-6, 1.0)}
    base = search_space(loaded, "vbpr", "base")
    assert base == {k: v for k, v in space.items() if k in ("lr", "reg_weight")}   # the shared part, identical
    # A backbone without reg_weight regularises through Adam's weight decay, in both variants, over its
    # own range (reg_weight's [1e-6, 1] held SOIL's embeddings at zero on MovieLens).
    for backbone in ("freedom", "soil"):
        for variant in ("base", "mrdib"):
            assert search_space(loaded, backbone, variant)["weight_decay"] == ("train.weight_decay", 1e-8, 1e-4)
    moved = load_params(PARAMS, ["tune.weight_decay_low=1e-7", "tune.weight_decay_high=1e-3"])
    assert search_space(moved, "soil")["weight_decay"] == ("train.weight_decay", 1e-7, 1e-3)
    assert search_space(moved, "vbpr")["reg_weight"] == ("backbones.vbpr.reg_weight", 1e-6, 1.0)
    with pytest.raises(SystemExit, match="base variant would have nothing to tune"):
        tune_main(["--dataset", "synthetic", "--data-dir", "unused", "--backbone", "vbpr", "--variant", "base",
                   "--out", "unused.json", "--set", "tune.tune_lr=false", "--set", "tune.tune_reg=false"])
    for bad in ("tune.alpha_low=0.5", "tune.backbones=[pop]", "tune.weight_decay_low=1e-3",
                "tune.weight_decay_hihg=1e-3"):
        with pytest.raises(ParamsError, match="tune"):
            load_params(PARAMS, [bad])


def test_a_study_opened_again_does_not_replay_its_first_trials(tmp_path):
    """Each process opens the study anew: a sampler seeded with `seed` alone would draw trial 0's
    parameters again after a resume."""
    from pipeline.tuning import open_study

    def draw(study):
        study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=1)
        return study.trials[-1].params["x"]

    settings = params(tmp_path)
    first = draw(open_study(settings, "resumed"))
    second = draw(open_study(settings, "resumed"))   # as after a kill: a new process, the same storage
    assert second != first
    fresh = params(tmp_path / "again")
    (tmp_path / "again").mkdir()
    assert draw(open_study(fresh, "resumed")) == first   # the same seed, a new study: the same first draw
