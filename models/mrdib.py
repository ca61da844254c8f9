"""The MRdIB training objective as a plug-in for any multimodal backbone.

Wang, Qin, Li, Zhong, Wen, Huang. "Multimodal Representation-disentangled Information
Bottleneck for Multimodal Recommendation", arXiv 2509.20225, 2025. Working spec:
../shared/spec/MRDIB.md. Mutual-information estimation after Belghazi et al., "Mutual
Information Neural Estimation" (MINE), ICML 2018 (Donsker-Varadhan bound).

A backbone routes each modality's projection h_m through `MRdIB.encode(m, h_m)` and uses
the returned z_m wherever it used h_m. After the backbone's own loss (which is L_S for
backbones whose score uses z), `MRdIB.loss_terms` adds, by name:

    kl          = alpha1 * sum_m KL(q(z_m|x_m) || N(0, I))        (Multimodal IB)
    mine        = alpha2 * I_hat(z_v; z_t)   (redundancy: the encoders minimise it)
    mine_critic = -I_hat(z_v; z_t)           (the critic maximises the bound; one critic pass
                                              serves both, see MRdIB._redundancy_terms)
    unique      = alpha3 * sum_m BPR(<e_u, g_m(z_m[i+])>, <e_u, g_m(z_m[i-])>)
    fused       = w * BPR(<e_u, f(z_v, z_t)[i+]>, <e_u, f(z_v, z_t)[i-]>), only for backbones whose
                  score does not use z (the explicit L_S head of the spec; w: the backbone's fused_weight)

Deviation, written down: with alpha1 = alpha2 = alpha3 = 0 the plug-in is inactive - encode()
returns h unchanged and no loss term or random draw is added - so such a run is identical
to the base backbone. `keep_encoder` is the control that separates the layer from the objective
(ablation `encoder_only`): the Gaussian encoders are built and trained, z is sampled in training
and mu used at evaluation exactly as in MRdIB, but no MRdIB term (KL, L_R, L_U) is added. The
fused L_S head of backbones whose score does not use z stays: it is L_S, not an MRdIB term. Its
parameters are initialised from their own generator, so building
the plug-in never shifts the backbone's random initialisation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from config.backbones import MODALITIES
from config.sections import MRdIBConfig


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """-mean log sigmoid(s+ - s-), Rendle et al., UAI 2009."""
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def gaussian_kl(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) per row, summed over dimensions: [n, d] -> [n]."""
    return 0.5 * (mu.pow(2) + sigma.pow(2) - 1.0 - 2.0 * torch.log(sigma)).sum(-1)


class GaussianEncoder(nn.Module):
    """h [n, d_in] -> (mu, sigma) [n, d]; z = mu + sigma * eps in training, z = mu in evaluation.

    mu and the pre-activation of sigma come from one Linear d_in -> 2d (one product, not two)."""

    def __init__(self, d_in: int, d_out: int, sigma_shift: float):
        super().__init__()
        self.linear, self.shift = nn.Linear(d_in, 2 * d_out), sigma_shift

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, scale = self.linear(h).chunk(2, dim=-1)
        return mu, F.softplus(scale - self.shift) + 1e-6


class MineCritic(nn.Module):
    """T(z_v, z_t) -> [n]: a small MLP on the concatenated pair."""

    def __init__(self, d_v: int, d_t: int, hidden: int, clamp: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_v + d_t, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.clamp = clamp

    def forward(self, z_v: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z_v, z_t], dim=-1)).squeeze(-1).clamp(-self.clamp, self.clamp)


def mine_estimate(critic: nn.Module, z_v: torch.Tensor, z_t: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Donsker-Varadhan bound: mean T(joint) - log mean exp T(marginal); marginal = z_t shuffled."""
    joint = critic(z_v, z_t).mean()
    marginal = torch.logsumexp(critic(z_v, z_t[perm]), dim=0) - math.log(len(perm))
    return joint - marginal


class ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by `scale` (Ganin & Lempitsky's
    gradient reversal, ICML 2015, with a weight)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def head_bpr(weight: torch.Tensor, user: torch.Tensor, z: torch.Tensor, pos_rows: torch.Tensor,
             neg_rows: torch.Tensor) -> torch.Tensor:
    """BPR of <e_u, W z_i+> against <e_u, W z_i->, computed as <W^T e_u, z_i>: one product per batch.

    weight: [user_dim, d] (a bias-free Linear d -> user_dim); user: [b, user_dim]; z: [n, d];
    pos_rows / neg_rows: [b] rows of z."""
    u = user @ weight                                                                # [b, d]
    return bpr_loss((u * z[pos_rows]).sum(-1), (u * z[neg_rows]).sum(-1))


class MRdIB(nn.Module):
    """Gaussian encoders, unique heads and the MINE critic, plus the per-batch latent cache.

    Active (config.active), it refuses at construction what it cannot do, rather than dropping terms
    silently: a modality set other than exactly MODALITIES (L_R is I_hat over that one pair), and
    user_dim None (a backbone that gives no user vector e_u, which L_U and the fused head score with).
    `owner` names the backbone in those errors."""

    def __init__(self, dims: dict[str, int], user_dim: int | None, config: MRdIBConfig, seed: int,
                 fused_weight: float = 0.0, owner: str = "MRdIB"):
        super().__init__()
        if config.active and sorted(dims) != sorted(MODALITIES):
            raise ValueError(f"{owner}: the MRdIB plug-in supports exactly the modalities {list(MODALITIES)} "
                             f"(its redundancy term L_R estimates I(z_image; z_text) over that pair); got "
                             f"{sorted(dims)}. Use the base variant (every alpha 0, keep_encoder false) instead")
        if config.active and user_dim is None:
            raise ValueError(f"{owner} gives no user vector (user_dim None), but the MRdIB plug-in needs e_u for "
                             f"its unique-information term L_U and the fused L_S head; use the base variant "
                             f"(every alpha 0, keep_encoder false) for {owner}")
        self.config = config
        generator = torch.Generator().manual_seed(seed + 7919)  # own stream: backbone init unchanged
        with _seeded_init(generator):
            self.encoders = nn.ModuleDict({m: GaussianEncoder(d, d, config.sigma_shift) for m, d in dims.items()})
            self.unique_heads = nn.ModuleDict({m: nn.Linear(d, user_dim, bias=False) for m, d in dims.items()})
            self.critic = MineCritic(dims["image"], dims["text"], config.critic_hidden, config.mine_clamp) \
                if set(dims) == set(MODALITIES) else None
            self.fused_head = nn.Linear(sum(dims.values()), user_dim, bias=False) if fused_weight > 0 else None
        self.fused_weight = fused_weight
        self._latents: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}

    def encode(self, modality: str, h: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """z for the projection h [n, d] of `items` [n] (None: row i is item i)."""
        if not self.config.active:
            return h
        mu, sigma = self.encoders[modality](h)
        z = mu + sigma * torch.randn_like(sigma) if self.training else mu
        self._latents[modality] = (z, mu, sigma, items)
        return z

    def latent(self, modality: str, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z, mu, sigma) rows of the last encode() call for `items`."""
        z, mu, sigma, encoded_items = self._latents[modality]
        if encoded_items is None:
            rows = items
        elif encoded_items is items or torch.equal(encoded_items, items):
            return z, mu, sigma  # the backbone encoded exactly these items (VBPR, FREEDOM): no gather
        else:
            position = torch.full((int(encoded_items.max()) + 1,), -1, dtype=torch.long, device=items.device)
            position[encoded_items] = torch.arange(len(encoded_items), device=items.device)
            rows = position[items]
        return z[rows], mu[rows], sigma[rows]

    def loss_terms(self, user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named, already weighted MRdIB terms. user: [b, user_dim] e_u for L_U; pos/neg: [b] items.

        Every term works on the batch's distinct items once (KL, MINE) or on rows of them (the BPR heads)."""
        cfg = self.config
        if not cfg.active:
            return {}
        missing = [m for m in self.encoders if m not in self._latents]
        if missing:
            raise RuntimeError(f"MRdIB: the backbone did not encode modalities {missing} in this batch")
        items, inverse = torch.unique(torch.cat([pos, neg]), return_inverse=True)
        pos_rows, neg_rows = inverse[: len(pos)], inverse[len(pos):]
        latents = {m: self.latent(m, items) for m in self.encoders}                  # (z, mu, sigma) [n, d]
        terms: dict[str, torch.Tensor] = {}
        if cfg.alpha1 > 0:
            terms["kl"] = cfg.alpha1 * sum(gaussian_kl(mu, sigma).mean() for _, mu, sigma in latents.values())
        if cfg.alpha2 > 0:  # active implies the (image, text) pair, so the critic exists
            terms.update(self._redundancy_terms(latents["image"][0], latents["text"][0]))
        if cfg.alpha3 > 0:
            terms["unique"] = cfg.alpha3 * sum(head_bpr(head.weight, user, latents[m][0], pos_rows, neg_rows)
                                               for m, head in self.unique_heads.items())
        if self.fused_head is not None:
            fused = torch.cat([latents[m][0] for m in self.encoders], dim=-1)
            terms["fused"] = self.fused_weight * head_bpr(self.fused_head.weight, user, fused, pos_rows, neg_rows)
        self._latents.clear()
        return terms

    def _redundancy_terms(self, z_v: torch.Tensor, z_t: torch.Tensor) -> dict[str, torch.Tensor]:
        """The min-max in one critic pass. The critic ascends I_hat (term mine_critic = -I_hat); the
        encoders descend alpha2 * I_hat: z reaches the critic through ScaleGrad(-alpha2), which turns
        the gradient of -I_hat into that of alpha2 * I_hat for them. `mine` carries the value of
        alpha2 * I_hat for the logs only (no gradient), so the summed loss keeps its value."""
        perm = torch.randperm(len(z_v), device=z_v.device)
        scale = -self.config.alpha2
        estimate = mine_estimate(self.critic, ScaleGrad.apply(z_v, scale), ScaleGrad.apply(z_t, scale), perm)
        return {"mine": self.config.alpha2 * estimate.detach(), "mine_critic": -estimate}


class _seeded_init:
    """Context manager: draw parameter initialisations from `generator`, leaving the global RNG alone."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def __enter__(self):
        self._state = torch.get_rng_state()
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=self.generator)))

    def __exit__(self, *exc):
        torch.set_rng_state(self._state)
