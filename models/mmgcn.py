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

MRdIB: z_m = encode(W_m x_m), the projection feeding each modality's GCN (the spec's site: z
replaces the projected features h_m); e_u for L_U is [x_image[u]; x_text[u]], the per-modality
user representations side by side (spec, section 3), so the unique head of a modality can read
that modality's user representation.

A known limitation with MRdIB, not fixed: the row normalisation right after the projection keeps
only the direction of z, so the score gains nothing from |mu| while the KL's mu^2 part costs, and
the bottleneck acts only through the noise ratio sigma / |mu|. The encoder stays at the spec's
site. Measurements and the alternatives tried: docs/experiments.md.

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

import torch
import torch.nn.functional as F
from torch import nn

from config.backbones import MMGCNConfig
from models.base import Recommender, l2_penalty, seeded_embedding
from models.graph import SparseGraph, bipartite, interaction_matrix, row_normalize
from models.mrdib import bpr_loss


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

    def __init__(self, ctx, config: MMGCNConfig):
        super().__init__(ctx, config)
        d, latent, concat = ctx.embedding_dim, config.latent_dim, config.combination == "concat"
        self.ids = seeded_embedding(ctx.n_users + ctx.n_items, d)                      # [U+I, d], trained
        self.preferences = nn.ModuleDict({m: seeded_embedding(ctx.n_users, latent) for m in self.modalities})
        self.projections = nn.ModuleDict({m: xavier_linear(ctx.features[m].shape[1], latent)
                                          for m in self.modalities})
        self.gcns = nn.ModuleDict({m: nn.ModuleList([MMGCNLayer(latent if layer == 0 else d, d, concat)
                                                     for layer in range(config.n_layers)]) for m in self.modalities})
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


BACKBONE = MMGCN
