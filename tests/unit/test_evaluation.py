"""The evaluator against hand-computed cases (spec formulas, section 4)."""
import math

import numpy as np
import pytest
import torch

from models.evaluation import Evaluator, metrics_from_hits

# 8 items. User 0: train {0}, held-out {2, 5}. User 1: train {1, 2}, held-out {7} (ranks 6th).
# User 2: train {0}, held-out {3, 4, 6}, all ranked first. User 3: train only (not evaluated).
SCORES = torch.tensor([
    [9, 1, 8, 2, 7, 6, 0.5, 0.1],   # ranking after masking 0: 2, 4, 5, 3, 1, 6, 7 -> hits at 1, 3
    [5, 9, 9, 4, 3, 2, 1, 0],       # ranking after masking 1, 2: 0, 3, 4, 5, 6, 7 -> hit at 6
    [0, 1, 2, 10, 9, 3, 8, 4],      # ranking after masking 0: 3, 4, 6, ... -> hits at 1, 2, 3
    [1, 2, 3, 4, 5, 6, 7, 8],
])
TRAIN = np.array([[0, 0], [1, 1], [1, 2], [2, 0], [3, 1]])
HELD = np.array([[0, 2], [0, 5], [1, 7], [2, 3], [2, 4], [2, 6]])

IDCG2 = 1 + 1 / math.log2(3)
EXPECTED_PER_USER = {  # (user 0, user 1, user 2)
    "recall@1": (1 / 2, 0, 1 / 3), "precision@1": (1, 0, 1), "map@1": (1, 0, 1), "ndcg@1": (1, 0, 1),
    "recall@3": (1, 0, 1), "precision@3": (2 / 3, 0, 1),
    "map@3": ((1 + 2 / 3) / 2, 0, 1), "ndcg@3": ((1 + 1 / math.log2(4)) / IDCG2, 0, 1),
    "recall@5": (1, 0, 1), "precision@5": (2 / 5, 0, 3 / 5),
    "map@5": ((1 + 2 / 3) / 2, 0, 1), "ndcg@5": ((1 + 1 / math.log2(4)) / IDCG2, 0, 1),
}


def score_fn(users):
    return SCORES[users].clone()


@pytest.mark.parametrize("batch_size", [1, 2, 100])
def test_hand_computed_cases(batch_size):
    evaluator = Evaluator(4, 8, TRAIN, {"valid": HELD}, ks=(1, 3, 5), batch_size=batch_size)
    users, per_user = evaluator.per_user(score_fn, ["valid"])["valid"]
    assert users.tolist() == [0, 1, 2]
    for name, expected in EXPECTED_PER_USER.items():
        assert per_user[name] == pytest.approx(expected), name
    means = evaluator.evaluate(score_fn, ["valid"])["valid"]
    for name, expected in EXPECTED_PER_USER.items():
        assert means[name] == pytest.approx(sum(expected) / 3), name


def test_every_heldout_item_first_scores_one():
    hits = torch.tensor([[1, 1, 0, 0, 0]])
    out = metrics_from_hits(hits, torch.tensor([2]), ks=(5,))
    assert out["ndcg@5"].item() == pytest.approx(1.0)
    assert out["map@5"].item() == pytest.approx(1.0)
    assert out["recall@5"].item() == pytest.approx(1.0)
    assert out["precision@5"].item() == pytest.approx(2 / 5)


def test_train_items_are_masked_and_splits_share_one_pass():
    calls = []

    def counting(users):
        calls.append(len(users))
        return score_fn(users)

    test_pairs = np.array([[0, 0], [3, 1]])  # items that are also train items of those users
    evaluator = Evaluator(4, 8, TRAIN, {"valid": HELD, "test": test_pairs}, ks=(1, 3, 5), batch_size=2)
    result = evaluator.evaluate(counting, ["valid", "test"])
    assert result["test"]["recall@5"] == 0.0  # a masked train item can never be a hit
    assert sum(calls) == 4 and max(calls) <= 2  # each user scored once, batches bounded


def test_full_metric_set_and_shape_check():
    evaluator = Evaluator(4, 60, TRAIN, {"valid": HELD})
    with pytest.raises(ValueError, match="shape"):
        evaluator.evaluate(lambda users: torch.zeros(len(users), 59), ["valid"])
    result = evaluator.evaluate(lambda users: torch.rand(len(users), 60, generator=torch.Generator().manual_seed(0)))
    assert len(result["valid"]) == 16
