"""Backbone-specific behaviour the generic backbone test does not see."""
from pathlib import Path

import pytest
import torch

from config.params import load_params
from models.base import DecayingLR
from models.data import load_dataset
from models.trainer import seed_everything
from pipeline.training import build_model

REPO = Path(__file__).resolve().parents[2]


def build(folder, backbone, variant="base"):
    params = load_params(REPO / "params.yaml")
    seed_everything(params.seed)
    data = load_dataset(folder)
    return build_model(params, data, backbone, variant, torch.device("cpu")), data


def one_step(model, data):
    users, pos = torch.as_tensor(data.train[:64, 0]), torch.as_tensor(data.train[:64, 1])
    neg = torch.randint(0, data.n_items, (64,))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    sum(model.calculate_loss(users, pos, neg).values()).backward()
    optimizer.step()


def test_mmgcn_trains_id_embeddings_and_preferences(tiny_synthetic):
    """The reference code leaves both untrained (plain tensors, not parameters)."""
    model, data = build(tiny_synthetic, "mmgcn")
    before = {name: p.detach().clone() for name, p in model.named_parameters()
              if name.startswith(("ids", "preferences"))}
    assert set(before) == {"ids.weight", "preferences.image.weight", "preferences.text.weight"}
    one_step(model, data)
    params = dict(model.named_parameters())
    assert all(not torch.equal(params[name], value) for name, value in before.items())


def test_freedom_prunes_per_epoch_deterministically_and_evaluates_on_the_full_graph(tiny_synthetic):
    model, _ = build(tiny_synthetic, "freedom")
    full = model.adjacency.nnz
    model.on_epoch_start(1)
    first = model.train_adjacency.to_dense()
    assert model.train_adjacency.nnz < 0.3 * full            # dropout 0.8 keeps ~20% of the edges
    model.on_epoch_start(2)
    assert not torch.equal(model.train_adjacency.to_dense(), first)
    model.on_epoch_start(1)
    assert torch.equal(model.train_adjacency.to_dense(), first)  # same epoch, same graph (resumable)
    model.eval()
    model.prepare_eval()
    _, items = model._eval_cache
    assert torch.allclose(items, model.embed(model.adjacency)[1])


def test_freedom_mrdib_adds_the_fused_head_with_its_weight(tiny_synthetic):
    model, data = build(tiny_synthetic, "freedom", "mrdib")
    users, pos = torch.as_tensor(data.train[:32, 0]), torch.as_tensor(data.train[:32, 1])
    neg = torch.randint(0, data.n_items, (32,))
    model.eval()  # z = mu: the same terms on every call
    terms = model.calculate_loss(users, pos, neg)
    assert {"bpr", "modal", "fused", "kl", "unique"} <= set(terms)
    weight = model.config.fused_weight
    assert model.mrdib.fused_weight == weight and 0 < weight < 1
    model.mrdib.fused_weight = 1.0
    unweighted = model.calculate_loss(users, pos, neg)["fused"]
    assert float(terms["fused"]) == pytest.approx(weight * float(unweighted)) and float(unweighted) > 0.1


def test_node_level_infonce_counts_each_user_and_item_once(tiny_synthetic):
    """A triple drawn twice must not make a node its own negative: the node-level InfoNCE of MGCN
    and the item-level one of SOIL see the same distinct nodes whether or not the batch repeats."""
    for backbone, term in (("mgcn", "cl"), ("soil", "cl")):
        model, data = build(tiny_synthetic, backbone)
        model.eval()
        users, pos = torch.as_tensor(data.train[:32, 0]), torch.as_tensor(data.train[:32, 1])
        neg = torch.as_tensor(data.train[32:64, 1])
        with torch.no_grad():
            once = model.calculate_loss(users, pos, neg)[term]
            twice = model.calculate_loss(users.repeat(2), pos.repeat(2), neg.repeat(2))[term]
        torch.testing.assert_close(once, twice)


def test_feature_table_gradient_equals_autograds_dense_gradient_step_after_step():
    """FeatureTable keeps one gradient buffer; each step the optimiser must see exactly the dense
    gradient autograd would give - rows of the previous step zeroed, repeated rows summed; a step
    that does not read the table leaves its gradient unset; a frozen table never gets one."""
    from models.base import FeatureTable
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(10, 3, generator=gen)
    table, reference = FeatureTable(values, trainable=True), torch.nn.Parameter(values.clone())
    frozen, other = FeatureTable(values, trainable=False), torch.nn.Parameter(torch.ones(3))
    weights = torch.randn(3, generator=gen)
    steps = [[torch.tensor([1, 4, 4, 7])], [], [torch.tensor([0, 4])], [torch.tensor([2]), torch.tensor([2, 9])]]
    for reads in steps:
        table.weight.grad, reference.grad, other.grad = None, None, None   # zero_grad(set_to_none=True)
        if not reads:   # this step's loss reads the frozen table only
            (frozen.rows(torch.tensor([1, 4])) * other).pow(2).sum().backward()
            assert other.grad is not None and torch.count_nonzero(other.grad) == 3   # the backward did run
            assert table.weight.grad is None                   # the buffer of the last step is not handed out
            assert not frozen.all().requires_grad and frozen.all().grad is None and not list(frozen.parameters())
            continue
        sum((table.rows(i) * weights).pow(2).sum() for i in reads).backward()
        sum((reference[i] * weights).pow(2).sum() for i in reads).backward()
        torch.testing.assert_close(table.weight.grad, reference.grad)   # after the empty step too: rows 1, 7 zeroed
    assert torch.equal(frozen.rows(torch.tensor([3])), values[[3]]) and frozen.state_dict() == {}


def test_soil_and_mgcn_share_the_smooth_learning_rate_decay(tiny_synthetic):
    """lr_e = lr * 0.96 ** ((e - 1) / 50) for both, from params.yaml (one implementation, models.base.DecayingLR)."""
    for backbone in ("mgcn", "soil"):
        model, _ = build(tiny_synthetic, backbone)
        assert isinstance(model, DecayingLR) and "lr_factor" not in vars(type(model))  # inherited, not redefined
        assert model.lr_factor(1) == 1.0
        assert model.lr_factor(51) == pytest.approx(0.96)
        assert model.lr_factor(26) == pytest.approx(0.96 ** 0.5)
