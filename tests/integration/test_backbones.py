"""Every registered backbone x variant: trains, loss falls, scores have the right shape, eval is deterministic.

On the CPU by default; MRDIB_TEST_DEVICE=cuda runs the same checks on a GPU (benchmarks/device_check.sh)."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from config.params import load_params
from models.data import load_dataset
from models.evaluation import Evaluator, summarize
from models.registry import backbone_classes
from models.trainer import Trainer, TrainSettings, pick_device, seed_everything
from pipeline.training import build_model

REPO = Path(__file__).resolve().parents[2]
BACKBONES = backbone_classes()
DEVICE = pick_device(os.environ.get("MRDIB_TEST_DEVICE", "cpu"))

CASES = [(name, variant) for name, cls in BACKBONES.items() if cls.trainable
         for variant in (("base", "mrdib") if cls.modalities else ("base",))]


def make_trainer(folder, backbone, variant, tmp_path, lr=0.01, overrides=()):
    params = load_params(REPO / "params.yaml", ["train.progress=false", *overrides])
    seed_everything(params.seed)
    data = load_dataset(folder)
    model = build_model(params, data, backbone, variant, DEVICE)
    evaluator = Evaluator(data.n_users, data.n_items, data.train, {"valid": data.valid, "test": data.test},
                          device=DEVICE)
    settings = TrainSettings(epochs=5, batch_size=256, lr=lr, patience=5, valid_metric="recall@20", progress=False)
    return Trainer(model, data.train, evaluator, settings, tmp_path, params.seed), data


@pytest.mark.parametrize("backbone,variant", CASES)
def test_backbone_trains_and_scores(tiny_synthetic, tmp_path, backbone, variant):
    trainer, data = make_trainer(tiny_synthetic, backbone, variant, tmp_path)
    model = trainer.model
    losses = []
    for epoch in range(1, 6):
        model.train()
        terms = trainer.train_epoch(epoch)
        assert all(np.isfinite(v) for v in terms.values()), terms
        losses.append(terms["bpr"])
    assert losses[-1] < losses[0]
    if variant == "mrdib":
        assert {"kl", "mine", "mine_critic", "unique"} <= set(terms)
    model.eval()
    model.prepare_eval()
    users = torch.arange(7, device=DEVICE)
    scores = model.full_scores(users)
    assert scores.shape == (7, data.n_items) and torch.isfinite(scores).all()
    first = trainer.evaluator.evaluate(model.full_scores, ["valid"])
    model.prepare_eval()
    assert trainer.evaluator.evaluate(model.full_scores, ["valid"]) == first


def test_pop_ranks_by_train_popularity(tiny_synthetic, tmp_path):
    trainer, data = make_trainer(tiny_synthetic, "pop", "base", tmp_path)
    counts = np.bincount(data.train[:, 1], minlength=data.n_items)
    scores = trainer.model.full_scores(torch.tensor([0, 1], device=DEVICE))
    assert np.array_equal(scores[0].cpu().numpy(), counts) and torch.equal(scores[0], scores[1])
    result = summarize(trainer.fit())
    assert 0 < result["valid"]["recall@50"] <= 1 and set(result["test"]) == set(result["valid"])


@pytest.mark.parametrize("backbone", [name for name, cls in BACKBONES.items() if cls.modalities])
def test_zero_alphas_give_the_base_models_loss_exactly(tiny_synthetic, tmp_path, backbone):
    """alpha1 = alpha2 = alpha3 = 0: the mrdib variant trains exactly as the base model, term by term."""
    zero = ["mrdib.alpha1=0", "mrdib.alpha2=0", "mrdib.alpha3=0"]
    histories, scores = [], []
    for variant in ("base", "mrdib"):
        trainer, _ = make_trainer(tiny_synthetic, backbone, variant, tmp_path / variant, overrides=zero)
        histories.append([trainer.train_epoch(epoch) for epoch in (1, 2)])
        trainer.model.eval()
        trainer.model.prepare_eval()
        scores.append(trainer.model.full_scores(torch.arange(7, device=DEVICE)))
    assert histories[0] == histories[1]
    assert torch.equal(scores[0], scores[1])
