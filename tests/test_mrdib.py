"""The MRdIB plug-in: KL closed form, MINE behaviour, min-max gradients, determinism."""
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from models.mrdib import MRdIB, MRdIBConfig, MineCritic, gaussian_kl, mine_estimate


def test_kl_matches_closed_form():
    gen = torch.Generator().manual_seed(0)
    mu, sigma = torch.randn(5, 7, generator=gen), torch.rand(5, 7, generator=gen) + 0.1
    expected = kl_divergence(Normal(mu, sigma), Normal(torch.zeros(7), torch.ones(7))).sum(-1)
    assert torch.allclose(gaussian_kl(mu, sigma), expected, atol=1e-6)
    assert gaussian_kl(torch.zeros(2, 3), torch.ones(2, 3)).abs().max() < 1e-7


def trained_critic_estimate(correlated: bool, steps: int = 300) -> float:
    torch.manual_seed(0)
    critic = MineCritic(4, 4, hidden=64, clamp=10.0)
    optimizer = torch.optim.Adam(critic.parameters(), lr=3e-3)

    def sample(n=256):
        z_v = torch.randn(n, 4)
        z_t = z_v + 0.1 * torch.randn(n, 4) if correlated else torch.randn(n, 4)
        return z_v, z_t

    for _ in range(steps):
        z_v, z_t = sample()
        loss = -mine_estimate(critic, z_v, z_t, torch.randperm(len(z_v)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        z_v, z_t = sample(4096)
        return float(mine_estimate(critic, z_v, z_t, torch.randperm(len(z_v))))


def test_mine_near_zero_for_independent_and_positive_for_correlated():
    independent, correlated = trained_critic_estimate(False), trained_critic_estimate(True)
    assert abs(independent) < 0.15
    assert correlated > 1.0  # true MI of this pair is about 4 * 2.3 nats


def make_plugin(**alphas) -> MRdIB:
    config = MRdIBConfig(**({"alpha1": 0.1, "alpha2": 1.0, "alpha3": 0.1} | alphas))
    return MRdIB({"image": 4, "text": 4}, user_dim=4, config=config, seed=0)


def test_min_max_gradients_push_in_opposite_directions():
    torch.manual_seed(1)
    plugin = make_plugin()
    h_v = torch.randn(256, 4)
    h_t = h_v + 0.05 * torch.randn(256, 4)   # strongly shared information
    items, perm = torch.arange(256), torch.randperm(256)

    def estimate():
        plugin.eval()
        z_v, z_t = plugin.encode("image", h_v), plugin.encode("text", h_t)
        return float(mine_estimate(plugin.critic, z_v, z_t, perm))

    plugin.train()
    for _ in range(200):  # let the critic learn the dependence first
        plugin.encode("image", h_v), plugin.encode("text", h_t)
        plugin.zero_grad()
        plugin._redundancy_terms(items)["mine_critic"].backward()
        with torch.no_grad():
            for p in plugin.critic.parameters():
                p -= 0.05 * p.grad
    encoder_params = list(plugin.encoders["image"].mu.parameters()) + list(plugin.encoders["text"].mu.parameters())
    critic_params = list(plugin.critic.parameters())

    plugin.eval()
    z_v, z_t = plugin.encode("image", h_v), plugin.encode("text", h_t)
    terms = plugin._redundancy_terms(items)
    plugin.zero_grad()
    terms["mine"].backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in critic_params)  # critic frozen here
    enc_grads = [p.grad.clone() for p in encoder_params]
    plugin.zero_grad()
    terms["mine_critic"].backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in encoder_params)  # z detached here
    critic_grads = [p.grad.clone() for p in critic_params]

    before = estimate()
    with torch.no_grad():
        for p, g in zip(encoder_params, enc_grads):
            p -= 0.05 * g
    after_encoders = estimate()
    with torch.no_grad():
        for p, g in zip(encoder_params, enc_grads):
            p += 0.05 * g
        for p, g in zip(critic_params, critic_grads):
            p -= 0.05 * g
    after_critic = estimate()
    assert after_encoders < before < after_critic


def test_terms_are_named_and_weighted_and_evaluation_is_deterministic():
    torch.manual_seed(2)
    plugin = make_plugin()
    h = torch.randn(10, 4)
    plugin.train()
    assert not torch.equal(plugin.encode("image", h), plugin.encode("image", h))  # z sampled
    plugin.encode("text", h)
    terms = plugin.loss_terms(torch.randn(3, 4), torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]))
    assert set(terms) == {"kl", "mine", "mine_critic", "unique"}
    plugin.eval()
    assert torch.equal(plugin.encode("image", h), plugin.encode("image", h))  # z = mu


def test_zero_weights_make_the_plugin_inactive():
    plugin = make_plugin(alpha1=0.0, alpha2=0.0, alpha3=0.0)
    h = torch.randn(6, 4)
    assert plugin.encode("image", h) is h
    assert plugin.loss_terms(torch.randn(2, 4), torch.tensor([0, 1]), torch.tensor([2, 3])) == {}
    only_kl = make_plugin(alpha2=0.0, alpha3=0.0)
    only_kl.encode("image", h, items=torch.arange(6) + 10), only_kl.encode("text", h, items=torch.arange(6) + 10)
    terms = only_kl.loss_terms(torch.randn(2, 4), torch.tensor([10, 11]), torch.tensor([12, 13]))
    assert set(terms) == {"kl"}


def test_plugin_construction_leaves_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    make_plugin()
    assert torch.equal(torch.rand(3), expected)
