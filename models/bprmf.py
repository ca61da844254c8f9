"""BPR-MF: matrix factorisation trained with the BPR loss (ID-only reference).

Rendle, Freudenthaler, Gantner, Schmidt-Thieme. "BPR: Bayesian Personalized Ranking from
Implicit Feedback", UAI 2009.
"""
from __future__ import annotations

from config.backbones import BPRMFConfig
from models.base import Recommender, l2_penalty, seeded_embedding
from models.mrdib import bpr_loss


class BPRMF(Recommender):
    Config = BPRMFConfig

    def __init__(self, ctx, config: BPRMFConfig):
        super().__init__(ctx, config)
        self.user_emb = seeded_embedding(ctx.n_users, ctx.embedding_dim)  # [n_users, d]
        self.item_emb = seeded_embedding(ctx.n_items, ctx.embedding_dim)  # [n_items, d]

    def backbone_loss(self, users, pos, neg):
        u, p, n = self.user_emb(users), self.item_emb(pos), self.item_emb(neg)
        terms = {"bpr": bpr_loss((u * p).sum(-1), (u * n).sum(-1)),
                 "reg": self.config.reg_weight * l2_penalty(u, p, n)}
        return terms, None

    def all_embeddings(self):
        return self.user_emb.weight, self.item_emb.weight


BACKBONE = BPRMF
