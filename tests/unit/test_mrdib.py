"""The MRdIB plug-in: KL closed form, min-max gradients, determinism (MINE trained to convergence:
tests/integration/test_mrdib_mine.py)."""
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from models.mrdib import MRdIB, MRdIBConfig, bpr_loss, gaussian_kl, head_bpr, mine_estimate


def test_kl_matches_closed_form():
    gen = torch.Generator().manual_seed(0)
    mu, sigma = torch.randn(5, 7, generator=gen), torch.rand(5, 7, generator=gen) + 0.1
    expected = kl_divergence(Normal(mu, sigma), Normal(torch.zeros(7), torch.ones(7))).sum(-1)
    assert torch.allclose(gaussian_kl(mu, sigma), expected, atol=1e-6)
    assert gaussian_kl(torch.zeros(2, 3), torch.ones(2, 3)).abs().max() < 1e-7


def make_plugin(**alphas) -> MRdIB:
    config = MRdIBConfig(**({"alpha1": 0.1, "alpha2": 1.0, "alpha3": 0.1} | alphas))
    return MRdIB({"image": 4, "text": 4}, user_dim=4, config=config, seed=0)


def redundancy(plugin, h_v, h_t):
    return plugin._redundancy_terms(plugin.encode("image", h_v), plugin.encode("text", h_t))


def test_min_max_gradients_push_in_opposite_directions():
    torch.manual_seed(1)
    plugin = make_plugin()
    h_v = torch.randn(256, 4)
    h_t = h_v + 0.05 * torch.randn(256, 4)   # strongly shared information
    perm = torch.randperm(256)

    @torch.no_grad()
    def estimate():
        plugin.eval()
        z_v, z_t = plugin.encode("image", h_v), plugin.encode("text", h_t)
        return float(mine_estimate(plugin.critic, z_v, z_t, perm))

    plugin.train()
    for _ in range(200):  # let the critic learn the dependence first
        plugin.zero_grad()
        redundancy(plugin, h_v, h_t)["mine_critic"].backward()
        with torch.no_grad():
            for p in plugin.critic.parameters():
                p -= 0.05 * p.grad
    encoder_params, critic_params = list(plugin.encoders.parameters()), list(plugin.critic.parameters())

    plugin.eval()
    plugin.zero_grad()
    sum(redundancy(plugin, h_v, h_t).values()).backward()  # as the trainer does: one backward of the sum
    enc_grads = [p.grad.clone() for p in encoder_params]
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


def test_one_critic_pass_gives_the_gradients_of_the_two_player_objective():
    """Encoders get d(alpha2 * I_hat)/d theta_enc with the critic frozen; the critic gets
    d(-I_hat)/d theta_T with z held fixed - each computed here from its own explicit pass."""
    torch.manual_seed(3)
    plugin = make_plugin(alpha2=0.3)
    h_v, h_t = torch.randn(64, 4), torch.randn(64, 4)
    encoder_params, critic_params = list(plugin.encoders.parameters()), list(plugin.critic.parameters())
    plugin.eval()  # z = mu: the explicit passes below see the same z

    torch.manual_seed(4)
    terms = redundancy(plugin, h_v, h_t)
    got = torch.autograd.grad(sum(terms.values()), encoder_params + critic_params)

    torch.manual_seed(4)
    perm = torch.randperm(64)
    z_v, z_t = plugin.encode("image", h_v), plugin.encode("text", h_t)
    estimate = mine_estimate(plugin.critic, z_v, z_t, perm)
    encoder_side = torch.autograd.grad(0.3 * estimate, encoder_params, retain_graph=True)
    critic_side = torch.autograd.grad(-mine_estimate(plugin.critic, z_v.detach(), z_t.detach(), perm), critic_params)
    for g, expected in zip(got, encoder_side + critic_side):
        torch.testing.assert_close(g, expected)
    torch.testing.assert_close(terms["mine"], 0.3 * estimate.detach())
    assert not terms["mine"].requires_grad


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


def test_head_bpr_equals_scoring_through_the_head():
    gen = torch.Generator().manual_seed(6)
    head = torch.nn.Linear(4, 6, bias=False)
    user, z = torch.randn(5, 6, generator=gen), torch.randn(8, 4, generator=gen)
    pos_rows, neg_rows = torch.tensor([0, 1, 2, 3, 3]), torch.tensor([7, 6, 5, 4, 0])
    explicit = bpr_loss((user * head(z[pos_rows])).sum(-1), (user * head(z[neg_rows])).sum(-1))
    torch.testing.assert_close(head_bpr(head.weight, user, z, pos_rows, neg_rows), explicit)


def test_latent_rows_follow_the_encoded_items():
    plugin = make_plugin()
    plugin.eval()
    h = torch.randn(4, 4)
    encoded = torch.tensor([9, 2, 5, 7])              # any order: the backbone's choice
    z = plugin.encode("image", h, items=encoded)
    torch.testing.assert_close(plugin.latent("image", torch.tensor([2, 7]))[0], z[[1, 3]])
    sorted_items = torch.tensor([2, 5, 7, 9])
    z = plugin.encode("image", h, items=sorted_items)
    assert plugin.latent("image", sorted_items.clone())[0] is z  # the same items: no gather


def tiny_backbone(modalities: tuple[str, ...], user_dim: int | None, mrdib: MRdIBConfig | None):
    """A minimal backbone that attaches the plug-in for `modalities` with `user_dim`."""
    import numpy as np

    from models.base import ModelContext, Recommender

    class Tiny(Recommender):
        def __init__(self, ctx, config):
            super().__init__(ctx, config)
            self.attach_mrdib({m: 4 for m in self.modalities}, user_dim=user_dim)

    Tiny.modalities = modalities
    Tiny.__name__ = "TinyBackbone"
    ctx = ModelContext(n_users=3, n_items=5, train=np.array([[0, 1], [1, 2], [2, 3]], dtype=np.int64),
                       features={m: torch.randn(5, 6) for m in modalities}, embedding_dim=4,
                       device=torch.device("cpu"), seed=0, mrdib=mrdib)
    return Tiny(ctx, Tiny.Config())


@pytest.mark.parametrize("modalities", [("image", "text", "audio"), ("image",), ("text", "audio")])
def test_active_plugin_refuses_a_modality_set_other_than_image_and_text(modalities):
    with pytest.raises(ValueError, match="supports exactly the modalities") as error:
        MRdIB({m: 4 for m in modalities}, user_dim=4, config=MRdIBConfig(), seed=0)
    assert str(sorted(modalities)) in str(error.value) and "['image', 'text']" in str(error.value)
    with pytest.raises(ValueError, match=r"^TinyBackbone: the MRdIB plug-in supports exactly") as error:
        tiny_backbone(modalities, 4, MRdIBConfig())
    assert str(sorted(modalities)) in str(error.value)
    only_encoder = MRdIBConfig(alpha1=0.0, alpha2=0.0, alpha3=0.0, keep_encoder=True)  # active too
    with pytest.raises(ValueError, match="supports exactly the modalities"):
        tiny_backbone(modalities, 4, only_encoder)


def test_active_plugin_refuses_a_backbone_without_a_user_vector():
    with pytest.raises(ValueError, match=r"^TinyBackbone gives no user vector \(user_dim None\)"):
        tiny_backbone(("image", "text"), None, MRdIBConfig())
    with pytest.raises(ValueError, match="gives no user vector"):
        tiny_backbone(("image", "text"), None, MRdIBConfig(alpha1=0.0, alpha2=0.0, alpha3=0.0, keep_encoder=True))
    with pytest.raises(ValueError, match=r"^MRdIB gives no user vector"):
        MRdIB({"image": 4, "text": 4}, user_dim=None, config=MRdIBConfig(), seed=0)


@pytest.mark.parametrize("modalities,user_dim", [(("image", "text", "audio"), 4), (("image", "text"), None)])
def test_inactive_plugin_accepts_what_it_would_refuse(modalities, user_dim):
    """alpha = 0 (or no MRdIB config) builds nothing: the base backbone, whatever it gives."""
    for config in (None, MRdIBConfig(alpha1=0.0, alpha2=0.0, alpha3=0.0)):
        assert tiny_backbone(modalities, user_dim, config).mrdib is None
