"""The trainer and the one training command: sampling, determinism, resume, errors, metrics.json."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from config.params import ParamsError, load_params
from models.trainer import NegativeSampler, NonFiniteLossError
from pipeline.training import run
from tasks.train import main as train_main

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"
QUIET = ["train.progress=false"]


def test_negatives_are_train_items_and_never_positives():
    rng = np.random.default_rng(0)
    train = np.array([[0, 0], [0, 1], [0, 2], [1, 2], [1, 3], [2, 0], [2, 4]])  # item 5 never in train
    sampler = NegativeSampler(train, n_items=6, rng=rng)
    users = np.repeat(train[:, 0], 200)
    negatives = sampler.sample(users)
    positives = {(u, i) for u, i in train}
    assert not any((u, i) in positives for u, i in zip(users, negatives))
    assert set(negatives) <= set(train[:, 1])
    assert set(negatives[users == 0]) == {3, 4}  # every allowed item gets drawn


def params(*overrides):
    return load_params(PARAMS, QUIET + list(overrides))


def test_same_seed_same_metrics_and_other_seed_differs(tiny_synthetic, tmp_path):
    first = run(params("train.epochs=3"), tiny_synthetic, "bprmf", "base", tmp_path / "a")
    second = run(params("train.epochs=3"), tiny_synthetic, "bprmf", "base", tmp_path / "b")
    other = run(params("train.epochs=3", "seed=99"), tiny_synthetic, "bprmf", "base", tmp_path / "c")
    assert first["valid"] == second["valid"] and first["test"] == second["test"]
    assert first["valid"] != other["valid"]


def test_zero_alphas_reproduce_the_base_model_exactly(tiny_synthetic, tmp_path):
    zero = ["mrdib.alpha1=0", "mrdib.alpha2=0", "mrdib.alpha3=0", "train.epochs=3"]
    base = run(params(*zero), tiny_synthetic, "vbpr", "base", tmp_path / "base")
    plug = run(params(*zero), tiny_synthetic, "vbpr", "mrdib", tmp_path / "mrdib")
    assert base["valid"] == plug["valid"] and base["test"] == plug["test"]
    history = [json.loads((tmp_path / v / "history.json").read_text()) for v in ("base", "mrdib")]
    assert [h["loss/bpr"] for h in history[0]] == [h["loss/bpr"] for h in history[1]]
    active = run(params("train.epochs=3"), tiny_synthetic, "vbpr", "mrdib", tmp_path / "active")
    terms = json.loads((tmp_path / "active" / "history.json").read_text())[0]
    assert {"loss/kl", "loss/mine", "loss/mine_critic", "loss/unique"} <= set(terms)
    assert active["valid"] != base["valid"]


def test_mgcn_learning_rate_decays_from_the_epoch_and_others_stay_constant(tiny_synthetic, tmp_path):
    """lr_e = lr * decay ** ((e - 1) / every) (the field's MGCN schedule), applied to the optimiser."""
    decaying = params("train.epochs=4", "train.patience=10", "train.lr=0.01",
                      "backbones.mgcn.lr_decay=0.5", "backbones.mgcn.lr_decay_epochs=2")
    run(decaying, tiny_synthetic, "mgcn", "base", tmp_path / "mgcn")
    lrs = [h["lr"] for h in json.loads((tmp_path / "mgcn" / "history.json").read_text())]
    assert lrs == pytest.approx([0.01, 0.01 * 0.5 ** 0.5, 0.005, 0.01 * 0.5 ** 1.5])
    run(params("train.epochs=2", "train.lr=0.01"), tiny_synthetic, "lightgcn", "base", tmp_path / "lightgcn")
    assert [h["lr"] for h in json.loads((tmp_path / "lightgcn" / "history.json").read_text())] == [0.01, 0.01]


def test_non_finite_loss_names_the_term(tiny_synthetic, tmp_path):
    folder = tmp_path / "huge"
    folder.mkdir()
    for f in tiny_synthetic.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    np.save(folder / "image_feat.npy", np.full_like(np.load(tiny_synthetic / "image_feat.npy"), 3e38))
    with pytest.raises(NonFiniteLossError, match="'bpr'"):
        run(params("train.epochs=2"), folder, "vbpr", "base", tmp_path / "out")


def test_cli_writes_metrics_json(tiny_synthetic, tmp_path):
    out = tmp_path / "run"
    train_main(["--data-dir", str(tiny_synthetic), "--backbone", "lightgcn", "--out", str(out), "--epochs", "2",
                "--seed", "4", "--params", str(PARAMS), "--set", "train.progress=false"])
    metrics = json.loads((out / "metrics.json").read_text())
    keys = [f"{m}@{k}" for k in (5, 10, 20, 50) for m in ("recall", "precision", "map", "ndcg")]
    assert sorted(metrics["valid"]) == sorted(keys) and sorted(metrics["test"]) == sorted(keys)
    assert 1 <= metrics["best_epoch"] <= 2 and metrics["seconds_per_epoch"] > 0
    assert metrics["seed"] == 4 and metrics["standin_features"] == []
    assert (out / "best.pt").exists() and (out / "train.log").exists()
    per_user = np.load(out / "per_user_test.npz")
    assert per_user["ndcg_at_20"].mean() == pytest.approx(metrics["test"]["ndcg@20"])
    assert len(per_user["users"]) == len(np.unique(per_user["users"]))


def test_command_line_train_values_beat_the_datasets_overrides(tiny_synthetic, tmp_path):
    """params.yaml gives the dataset `synthetic` its own train: epochs 40 and lr 0.01; what the
    user types on the command line must still win."""
    folder = tmp_path / "synthetic"
    shutil.copytree(tiny_synthetic, folder)
    (folder / "tiny.inter").rename(folder / "synthetic.inter")
    out = tmp_path / "run"
    train_main(["--data-dir", str(folder), "--backbone", "bprmf", "--out", str(out), "--epochs", "2",
                "--params", str(PARAMS), "--set", "train.progress=false", "--set", "train.lr=0.0005"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "synthetic" and metrics["epochs_run"] == 2
    log = (out / "train.log").read_text()
    assert "train overrides of bprmf on dataset synthetic: {'lr': 0.0005, 'epochs': 2," in log


def test_train_overrides_go_global_then_dataset_then_backbone_on_dataset():
    params = load_params(PARAMS, ["train.lr=0.5", "datasets.synthetic.train.lr=0.25",
                                  "backbones.mmgcn.train_on.synthetic.lr=0.125"])
    assert params.for_dataset("baby", "mmgcn").train.lr == 0.5
    assert params.for_dataset("synthetic", "vbpr").train.lr == 0.25
    assert params.for_dataset("synthetic", "mmgcn").train.lr == 0.125
    assert params.for_dataset("synthetic", "mmgcn").train.epochs == 150  # params.yaml's MMGCN-on-synthetic cap
    assert "train_on" not in params.backbone_config("mmgcn").model_dump()
    with pytest.raises(ParamsError, match=r"backbones.mmgcn.*lrr"):
        load_params(PARAMS, ["backbones.mmgcn.train_on.synthetic={lrr: 0.1}"])
    with pytest.raises(ParamsError, match=r"backbones.mmgcn.train_on.nowhere: not defined under datasets"):
        load_params(PARAMS, ["backbones.mmgcn.train_on={nowhere: {lr: 0.1}}"])


def test_several_seeds_in_one_process_equal_separate_runs(tiny_synthetic, tmp_path):
    common = ["--data-dir", str(tiny_synthetic), "--backbone", "vbpr", "--variant", "mrdib", "--epochs", "2",
              "--params", str(PARAMS), "--set", "train.progress=false"]
    out, checkpoints = tmp_path / "stage", tmp_path / "checkpoints"
    train_main(common + ["--seeds", "4", "5", "--out", str(out), "--checkpoints", str(checkpoints)])
    train_main(common + ["--seed", "5", "--out", str(tmp_path / "alone")])
    together = json.loads((out / "seed5" / "metrics.json").read_text())
    alone = json.loads((tmp_path / "alone" / "metrics.json").read_text())
    assert together["test"] == alone["test"] and together["seed"] == 5
    assert json.loads((out / "seed4" / "metrics.json").read_text())["test"] != together["test"]
    for seed in ("seed4", "seed5"):  # outputs in --out, the state of the run in --checkpoints
        assert sorted(p.name for p in (out / seed).iterdir()) == [
            "best.pt", "history.json", "metrics.json", "per_user_test.npz", "train.log"]
        assert (checkpoints / seed / "last.pt").exists()
    # DVC deletes a stage's outputs before running it again: the finished runs are re-evaluated
    # from their checkpoints, not trained again
    shutil.rmtree(out)
    train_main(common + ["--seeds", "4", "5", "--out", str(out), "--checkpoints", str(checkpoints)])
    assert json.loads((out / "seed5" / "metrics.json").read_text()) == together
    assert "resumed from" in (out / "seed5" / "train.log").read_text()


def test_bad_configuration_is_an_error(tiny_synthetic, tmp_path):
    with pytest.raises(ParamsError, match=r"unknown key 'train.lrr'.*'lr'"):
        load_params(PARAMS, ["train.lrr=0.1"])
    with pytest.raises(ParamsError, match="train.valid_metric"):
        load_params(PARAMS, ["train.valid_metric=recall@7"])
    with pytest.raises(ParamsError, match="n_layers"):
        load_params(PARAMS, ["backbones.lightgcn.n_layers=three"])
    with pytest.raises(KeyError, match=r"unknown backbone 'nope'; known backbones: \['bprmf'"):
        run(params(), tiny_synthetic, "nope", "base", tmp_path / "x")
    with pytest.raises(ValueError, match="MRdIB does not apply"):
        run(params(), tiny_synthetic, "bprmf", "mrdib", tmp_path / "y")


def test_standin_features_are_flagged(tiny_synthetic, tmp_path):
    folder = tmp_path / "ids_only"
    folder.mkdir()
    (folder / "tiny.inter").write_bytes((tiny_synthetic / "tiny.inter").read_bytes())
    with pytest.raises(ValueError, match="stand-in"):
        run(params("train.epochs=1"), folder, "vbpr", "base", tmp_path / "no")
    metrics = run(params("train.epochs=1", "data.standin_features=true"), folder, "vbpr", "base", tmp_path / "yes")
    assert not (tmp_path / "no" / "metrics.json").exists()   # refused before training
    assert metrics["standin_features"] == ["image", "text"]
    assert metrics["warning"] == ("STAND-IN features for ['image', 'text']: seeded noise with no signal; "
                                  "not comparable to published numbers")
    assert json.loads((tmp_path / "yes" / "metrics.json").read_text())["warning"] == metrics["warning"]


def train_command(data, out):
    return [sys.executable, "-m", "tasks.train", "--data-dir", str(data), "--backbone", "vbpr", "--variant",
            "mrdib", "--out", str(out), "--epochs", "8", "--set", "train.batch_size=64",
            "--set", "train.progress=false", "--set", "train.patience=100"]


def test_killed_run_resumes_to_the_same_metrics(tiny_synthetic, tmp_path):
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    subprocess.run(train_command(tiny_synthetic, tmp_path / "whole"), cwd=REPO, env=env, check=True,
                   capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen(train_command(tiny_synthetic, killed), cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(train_command(tiny_synthetic, killed), cwd=REPO, env=env, check=True,
                             capture_output=True, text=True)
    # last.pt is written after epoch 1, then at most every train.checkpoint_seconds (60) and at the end: the
    # resumed run starts from epoch 1 and replays the epochs the killed one had run since
    assert "last.pt after epoch 1 " in resumed.stderr, resumed.stderr[-2000:]
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    again = json.loads((killed / "metrics.json").read_text())
    assert again["valid"] == whole["valid"] and again["test"] == whole["test"]
    assert again["best_epoch"] == whole["best_epoch"]


def test_compare_trains_each_model_once_and_prints_a_table(tiny_synthetic, tmp_path, capsys):
    from tools.compare import main as compare_main

    args = ["--data-dir", str(tiny_synthetic), "--out", str(tmp_path), "--models", "pop", "vbpr:mrdib",
            "--params", str(PARAMS), "--set", "train.epochs=1", "--set", "train.progress=false"]
    compare_main(args)
    table = (tmp_path / "table.md").read_text()
    assert "| pop-base/seed2024 |" in table and "| vbpr-mrdib/seed2024 |" in table
    first = (tmp_path / "vbpr-mrdib" / "seed2024" / "metrics.json").stat().st_mtime_ns
    compare_main(args)  # finished models are read back, not trained again
    assert (tmp_path / "vbpr-mrdib" / "seed2024" / "metrics.json").stat().st_mtime_ns == first
    assert "vbpr-mrdib/seed2024" in capsys.readouterr().out


class _Payload:
    """Unpickling this runs `touch <marker>`: what a planted checkpoint would do under weights_only=False."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_planted_checkpoint_is_refused_never_run_nor_replaced(tiny_synthetic, tmp_path):
    import torch

    checkpoints, marker = tmp_path / "checkpoints", tmp_path / "payload-ran"
    checkpoints.mkdir()
    torch.save({"fingerprint": "x", "model": _Payload(marker)}, checkpoints / "last.pt")
    planted = (checkpoints / "last.pt").read_bytes()
    with pytest.raises(SystemExit) as refused:
        train_main(["--data-dir", str(tiny_synthetic), "--backbone", "bprmf", "--epochs", "1", "--out",
                    str(tmp_path / "run"), "--checkpoints", str(checkpoints), "--params", str(PARAMS),
                    "--set", "train.progress=false", "--set", "tracking.enabled=false"])
    assert "last.pt: refused to resume" in str(refused.value.code)
    assert not marker.exists()                                          # never executed
    assert (checkpoints / "last.pt").read_bytes() == planted            # never replaced
    assert not (tmp_path / "run" / "metrics.json").exists()
