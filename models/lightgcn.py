"""LightGCN: linear propagation over the normalised user-item graph (ID-only reference).

He, Deng, Wang, Li, Zhang, Wang. "LightGCN: Simplifying and Powering Graph Convolution
Network for Recommendation", SIGIR 2020. Final representation = mean of layers 0..L.
"""
from __future__ import annotations

import torch

from config.backbones import LightGCNConfig
from models.base import Recommender, l2_penalty, seeded_embedding
from models.graph import SparseGraph, normalized_bipartite
from models.layers import propagate
from models.mrdib import bpr_loss


class LightGCN(Recommender):
    Config = LightGCNConfig
    graph_names = ('adjacency',)
    graph_params = ()  # the config keys build_graphs reads

    def __init__(self, ctx, config: LightGCNConfig):
        super().__init__(ctx, config)
        self.user_emb = seeded_embedding(ctx.n_users, ctx.embedding_dim)
        self.item_emb = seeded_embedding(ctx.n_items, ctx.embedding_dim)
        self.adjacency = SparseGraph(self.fixed_graphs()["adjacency"], ctx.device)  # [(U+I), (U+I)]

    @classmethod
    def build_graphs(cls, ctx, config):
        """adjacency: the normalised user-item graph."""
        return {"adjacency": normalized_bipartite(ctx.n_users, ctx.n_items, ctx.train)}

    def all_embeddings(self):
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        final = propagate(self.adjacency, ego, self.config.n_layers)
        return final[: self.ctx.n_users], final[self.ctx.n_users:]

    def backbone_loss(self, users, pos, neg):
        user_reps, item_reps = self.all_embeddings()
        u, p, n = user_reps[users], item_reps[pos], item_reps[neg]
        terms = {"bpr": bpr_loss((u * p).sum(-1), (u * n).sum(-1)),
                 "reg": self.config.reg_weight * l2_penalty(
                     self.user_emb(users), self.item_emb(pos), self.item_emb(neg))}
        return terms, None


BACKBONE = LightGCN
