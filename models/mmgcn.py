"""MMGCN: one graph convolution network per modality on the user-item graph.

Wei, Wang, Nie, He, Hong, Chua. "MMGCN: Multi-modal Graph Convolution Network for
Personalized Recommendation of Micro-video", ACM MM 2019.

Per modality m, node inputs are a learned user preference p_u and the projected item features
z_m = W_m x_m, x0 = normalise([p; z_m]). Each layer l:
    aggregation  h = LeakyReLU(mean_{j in N(n)} W1 x_j)
    combination  x' = LeakyReLU(W2 x + b2) + e_id      (e_id: the node's ID embedding)
                 x  = LeakyReLU(W3 [h; x'] + b3)        ("concat"; "add": LeakyReLU(W3 h + b3 + x'))
Final representation = mean over modalities of the last layer; score = <user, item>;
L = BPR + reg * (L2 of the batch's ID embeddings and preferences).

MRdIB: z_m = encode(W_m x_m), the projection feeding each modality's GCN; e_u for L_U is
[x_image[u]; x_text[u]], the per-modality user representations side by side (spec, section 3),
so the unique head of a modality can read that modality's user representation.

Known problem, open: on the synthetic default MMGCN + MRdIB falls below the base model (test
R@20 0.126 vs 0.198, seeds 2024/2025; params.yaml alphas). Seed 2024, valid R@20: base 0.213,
full MRdIB 0.133, alpha1 = 0 0.179, alpha2 = 0 0.132, alpha3 = 0 0.134 - and alpha1 = 1e-4 0.136,
alpha1 = 1e-3 0.127: the KL term hurts whatever its weight. Row norms of sigma (noise) and mu at
the best checkpoint, image / text: alpha1 5e-3: 3.1 vs 2.1 / 4.8 vs 1.0 (z mostly noise);
alpha1 1e-4: 2.2 vs 19.5 / 2.1 vs 4.8; alpha1 0: 13.4 vs 284 / 0.1 vs 2.2. So noise swamping mu
explains 5e-3 but not 1e-4, which is as bad; the mechanism is open. Both peak by epoch ~30 (base
and alpha1 = 0: 134 and 65). Encoding the normalised projection instead (z not normalised) did
not help: valid 0.123. Scale of the noise between runs: normalising users and items separately,
the same maths in another summation order, moves base valid R@20 from 0.213 to 0.174, so single
runs differ by a few hundredths; the MRdIB gap is larger. To try next: log sigma per epoch.

Deviations from the paper / reference code, written down:
- The ID embeddings and user preferences are trained. The reference code keeps both in plain
  tensors that are never registered as parameters, so they stay at their random init.
- Both modalities are projected to latent_dim (the reference projects images to 256 and feeds
  raw text): MRdIB needs a projection per modality, and it keeps the two GCNs alike.
- n_layers layers (default 2, the reference config's value; its code hard-codes 3).
- The reference passes the string 'False' as its concat flag, which is truthy, so it always
  concatenates; "concat" is the default here and "add" is selectable.
- The L2 term uses the batch users' preferences of both modalities (the reference: the whole
  image preference table only) and l2_penalty's sum/2/batch form.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.base import Recommender, l2_penalty, seeded_embedding
from models.config import StrictConfig
from models.graph import bipartite, interaction_matrix, row_normalize, SparseGraph
from models.mrdib import bpr_loss


class MMGCNConfig(StrictConfig):
    n_layers: int = 2                               # graph convolution layers per modality
    latent_dim: int = 256                           # width of projected features and user preferences
    combination: Literal["concat", "add"] = "concat"  # how a layer combines neighbours and the node itself
    reg_weight: float = 1e-4                        # L2 weight on the batch's ID embeddings and preferences


def xavier_linear(d_in: int, d_out: int, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(d_in, d_out, bias=bias)
    nn.init.xavier_normal_(layer.weight)
    return layer


class MMGCNLayer(nn.Module):
    """One aggregation + combination layer: x [N, d_in] -> [N, d]."""

    def __init__(self, d_in: int, d: int, concat: bool):
        super().__init__()
        self.concat = concat
        self.aggregate = xavier_linear(d_in, d_in, bias=False)   # W1
        self.own = xavier_linear(d_in, d)                        # W2
        self.combine = xavier_linear(d_in + d if concat else d_in, d)  # W3

    def forward(self, x: torch.Tensor, mean_adjacency: SparseGraph, ids: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(mean_adjacency @ self.aggregate(x))       # [N, d_in]
        own = F.leaky_relu(self.own(x)) + ids                                       # [N, d]
        if self.concat:
            return F.leaky_relu(self.combine(torch.cat([h, own], dim=1)))
        return F.leaky_relu(self.combine(h) + own)


class MMGCN(Recommender):
    Config = MMGCNConfig
    graph_names = ('adjacency',)
    graph_params = ()  # the config keys build_graphs reads
    modalities = ("image", "text")

    def __init__(self, ctx, config: MMGCNConfig):
        super().__init__(ctx, config)
        d, latent, concat = ctx.embedding_dim, config.latent_dim, config.combination == "concat"
        self.ids = seeded_embedding(ctx.n_users + ctx.n_items, d)                      # [U+I, d], trained
        self.preferences = nn.ModuleDict({m: seeded_embedding(ctx.n_users, latent) for m in self.modalities})
        self.projections = nn.ModuleDict({m: xavier_linear(ctx.features[m].shape[1], latent)
                                          for m in self.modalities})
        self.gcns = nn.ModuleDict({m: nn.ModuleList([MMGCNLayer(latent if l == 0 else d, d, concat)
                                                     for l in range(config.n_layers)]) for m in self.modalities})
        self.adjacency = SparseGraph(self.fixed_graphs()["adjacency"], ctx.device)
        self.attach_mrdib({m: latent for m in self.modalities}, user_dim=d * len(self.modalities))

    @classmethod
    def build_graphs(cls, ctx, config):
        """adjacency: the user-item graph, row-normalised (mean aggregation) [(U+I), (U+I)]."""
        r = interaction_matrix(ctx.n_users, ctx.n_items, ctx.train)
        return {"adjacency": row_normalize(bipartite(ctx.n_users, ctx.n_items, r))}

    def modality_reps(self, m: str) -> torch.Tensor:
        """The GCN of modality m -> [U+I, d]."""
        z = self.encode(m, self.projections[m](self.ctx.features[m]))                # [I, latent]
        x = F.normalize(torch.cat([self.preferences[m].weight, z]), dim=1)           # [U+I, latent]
        for layer in self.gcns[m]:
            x = layer(x, self.adjacency, self.ids.weight)
        return x

    def all_embeddings(self):
        final = torch.stack([self.modality_reps(m) for m in self.modalities]).mean(0)
        return final[: self.ctx.n_users], final[self.ctx.n_users:]

    def backbone_loss(self, users, pos, neg):
        n_u = self.ctx.n_users
        reps = [self.modality_reps(m) for m in self.modalities]
        final = torch.stack(reps).mean(0)                                              # [U+I, d]
        u = final[users]
        terms = {"bpr": bpr_loss((u * final[n_u + pos]).sum(-1), (u * final[n_u + neg]).sum(-1)),
                 "reg": self.config.reg_weight * l2_penalty(
                     self.ids(users), self.ids(n_u + pos), self.ids(n_u + neg),
                     *(self.preferences[m](users) for m in self.modalities))}
        return terms, torch.cat([r[users] for r in reps], dim=1)                      # e_u [b, 2d]
