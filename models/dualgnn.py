"""DualGNN: per-modality graph convolution on the user-item graph plus a user co-occurrence graph.

Wang, Wei, Yin, Wu, Song, Nie. "DualGNN: Dual Graph Neural Network for Multimedia
Recommendation", IEEE Transactions on Multimedia 2021.

- Single-modal representation learning: per modality m, item features go through an MLP
  (feat -> 256 -> 64), users have a learned preference vector; x = normalise([p_u; z_m]) is
  propagated on the symmetric-normalised user-item graph, x_m = x + A x + A^2 x.
- Multimodal fusion: user u = sum_m alpha_{u,m} x_m[u] (per-user weights, softmax-initialised),
  item i = sum_m x_m[i].
- User co-occurrence graph: each user's 40 users sharing the most train items, weighted by a
  softmax over the shared-item counts; final user = u + sum_v w_uv u_v.
- score = <user, item>; L = BPR + reg * (mean p_v[u]^2 + mean p_t[u]^2 + mean alpha^2).

MRdIB: z_m = encode(MLP_m(x_m)); e_u for L_U is the final user representation.

Deviations, written down:
- Users with fewer than 40 co-occurring users keep the ones they have; the reference pads the
  list to 40 by re-drawing random duplicates each epoch, which only re-weights the softmax.
  The user graph is therefore deterministic and built once.
- The reference's per-modality item dropout masks are built but never used in propagation;
  they are left out. Its unused item fusion weights (weight_i, only regularised) are left out.
- BPR uses the natural log (the reference uses log2: a constant factor 1/ln 2).
- The fusion quirk of the field's reference port (MMRec, src/models/dualgnn.py) is not copied. There
  the item sum is built as `representation = self.v_rep` and then `representation += self.t_rep`:
  the `+=` is in place on the tensor that `self.v_rep` also names, so the image representation
  becomes x_v + x_t before the per-user weighting reads it, and the fused user representation
  (the one the user-user aggregation then adds to) is alpha_v (x_v + x_t) + alpha_t x_t rather
  than alpha_v x_v + alpha_t x_t: the text view is counted with weight alpha_v + alpha_t and the
  learned image weight cannot isolate the image view. Items (x_v + x_t) are as intended. The
  authors' original code (wqf321/dualgnn, Model.py) sums out of place (`v_rep + a_rep + t_rep`)
  and has no such aliasing; here the paper's sum_m alpha_{u,m} x_m[u] is used. Read in the
  released code, not run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from config.backbones import DualGNNConfig
from models.base import Recommender, seeded_embedding
from models.graph import SparseGraph, normalized_bipartite, row_softmax, user_cooccurrence_graph
from models.mrdib import bpr_loss


def feature_mlp(d_in: int, hidden: int, d: int) -> nn.Module:
    """x [n, d_in] -> [n, d]: Linear, LeakyReLU, Linear."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.LeakyReLU(), nn.Linear(hidden, d))


class DualGNN(Recommender):
    Config = DualGNNConfig
    graph_names = ('adjacency', 'user_graph')
    graph_params = ('user_k',)  # the config keys build_graphs reads

    def __init__(self, ctx, config: DualGNNConfig):
        super().__init__(ctx, config)
        d = ctx.embedding_dim
        self.preferences = nn.ModuleDict({m: seeded_embedding(ctx.n_users, d) for m in self.modalities})
        self.mlps = nn.ModuleDict({m: feature_mlp(ctx.features[m].shape[1], config.hidden_dim, d)
                                   for m in self.modalities})
        alpha = nn.init.xavier_normal_(torch.empty(ctx.n_users, len(self.modalities)))
        self.user_weight = nn.Parameter(torch.softmax(alpha, dim=1))                  # [U, M]
        graphs = self.fixed_graphs()
        self.adjacency = SparseGraph(graphs["adjacency"], ctx.device)                 # [U+I, U+I]
        self.user_graph = SparseGraph(graphs["user_graph"], ctx.device)               # [U, U]
        self.attach_mrdib({m: d for m in self.modalities}, user_dim=d)

    @classmethod
    def build_graphs(cls, ctx, config):
        """adjacency: normalised user-item graph; user_graph: top-k co-occurrence users, softmax rows."""
        users = user_cooccurrence_graph(ctx.n_users, ctx.n_items, ctx.train, config.user_k)
        return {"adjacency": normalized_bipartite(ctx.n_users, ctx.n_items, ctx.train),
                "user_graph": row_softmax(users)}

    def modality_reps(self, m: str) -> torch.Tensor:
        """x + A x + ... + A^L x for x = normalise([p; z_m]) -> [U+I, d]."""
        z = self.encode(m, self.mlps[m](self.ctx.features[m]))                         # [I, d]
        x = F.normalize(torch.cat([self.preferences[m].weight, z]), dim=1)
        total, current = x, x
        for _ in range(self.config.n_layers):
            current = self.adjacency @ current
            total = total + current
        return total

    def all_embeddings(self):
        n_u = self.ctx.n_users
        reps = [self.modality_reps(m) for m in self.modalities]
        users = (torch.stack([r[:n_u] for r in reps], dim=-1) * self.user_weight[:, None, :]).sum(-1)  # [U, d]
        users = users + self.user_graph @ users
        return users, sum(r[n_u:] for r in reps)

    def backbone_loss(self, users, pos, neg):
        user_reps, item_reps = self.all_embeddings()
        u = user_reps[users]
        reg = sum(self.preferences[m](users).pow(2).mean() for m in self.modalities) + self.user_weight.pow(2).mean()
        terms = {"bpr": bpr_loss((u * item_reps[pos]).sum(-1), (u * item_reps[neg]).sum(-1)),
                 "reg": self.config.reg_weight * reg}
        return terms, u


BACKBONE = DualGNN
