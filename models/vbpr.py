"""VBPR: matrix factorisation plus a content part projected from the item features.

He & McAuley. "VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback", AAAI 2016.

score(u, i) = <gamma_u, gamma_i> + <theta_u, [z_image(i); z_text(i)]>, with z_m = E_m x_m.

Deviations, written down:
- One Linear per modality (E_image, E_text) instead of one Linear on concat(x_t, x_v) as the
  field's toolbox does: MRdIB needs a latent per modality. The content user vector theta_u
  is 2d wide (one d-block per modality).
- The visual bias term beta' x_i of the paper is left out, as in the field's toolbox.
- e_u for MRdIB's L_U is theta_u, the content half of the user vector (spec, section 3).
"""
from __future__ import annotations

import torch
from torch import nn

from config.backbones import VBPRConfig
from models.base import Recommender, l2_penalty, seeded_embedding
from models.mrdib import bpr_loss


class VBPR(Recommender):
    Config = VBPRConfig

    def __init__(self, ctx, config: VBPRConfig):
        super().__init__(ctx, config)
        d = ctx.embedding_dim
        self.user_id = seeded_embedding(ctx.n_users, d)                          # gamma_u [n_users, d]
        self.user_content = seeded_embedding(ctx.n_users, d * len(self.modalities))  # theta_u [n_users, 2d]
        self.item_id = seeded_embedding(ctx.n_items, d)                          # gamma_i [n_items, d]
        self.projections = nn.ModuleDict(
            {m: nn.Linear(ctx.features[m].shape[1], d) for m in self.modalities})  # E_m
        for layer in self.projections.values():
            nn.init.xavier_normal_(layer.weight)
        self.attach_mrdib({m: d for m in self.modalities}, user_dim=d * len(self.modalities))

    def item_content(self, items: torch.Tensor | None) -> torch.Tensor:
        """[z_image; z_text] of `items` (None: all items) -> [n, 2d]."""
        parts = []
        for m in self.modalities:
            # index_select, not features[items]: a plain row gather, about half the time of advanced indexing
            x = self.ctx.features[m] if items is None else self.ctx.features[m].index_select(0, items)
            parts.append(self.encode(m, self.projections[m](x), items))
        return torch.cat(parts, dim=-1)

    def backbone_loss(self, users, pos, neg):
        items = torch.unique(torch.cat([pos, neg]))
        content = self.item_content(items)                       # [n_unique, 2d]
        position = torch.empty(self.ctx.n_items, dtype=torch.long, device=items.device)
        position[items] = torch.arange(len(items), device=items.device)
        theta = self.user_content(users)
        gamma_u = self.user_id(users)
        scores = [(gamma_u * self.item_id(i)).sum(-1) + (theta * content[position[i]]).sum(-1) for i in (pos, neg)]
        terms = {"bpr": bpr_loss(*scores),
                 "reg": self.config.reg_weight * l2_penalty(
                     gamma_u, theta, self.item_id(pos), self.item_id(neg), content[position[pos]],
                     content[position[neg]])}
        return terms, theta

    def all_embeddings(self):
        users = torch.cat([self.user_id.weight, self.user_content.weight], dim=-1)
        items = torch.cat([self.item_id.weight, self.item_content(None)], dim=-1)
        return users, items


BACKBONE = VBPR
