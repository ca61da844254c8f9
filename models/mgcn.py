"""MGCN: multi-view graph convolution with behaviour-guided purifiers and a behaviour-aware fuser.

Yu, Tan, Lu, Bao. "Multi-View Graph Convolutional Network for Multimedia Recommendation",
ACM MM 2023.

Three views of every node: the user-item view (LightGCN on the interaction graph, the "content"
embeddings) and one item-item view per modality. In a modality view the item ID embedding is
purified by a gate computed from the projected features, e_m = e_id * sigmoid(W_m z_m + b_m),
propagated over the frozen kNN item graph of that modality and carried to users through the
normalised interaction matrix. The fuser takes the attention-weighted common part of the
modality views plus each view's specific part gated by the user-item view's preference:

    common = sum_m a_m e_m,  side = (sum_m sigmoid(P_m content) * (e_m - common) + common) / 3
    final  = content + side,   score(u, i) = <final_u, final_i>
    L      = BPR + reg * L2(final_u, final_i+, final_i-)
             + cl * (InfoNCE(side_i+, content_i+) + InfoNCE(side_u, content_u))

The learning rate decays smoothly, lr_e = lr * lr_decay ** ((e - 1) / lr_decay_epochs), i.e. by
0.96 every 50 epochs as in the field's MGCN configuration (models.base.DecayingLR).

MRdIB: z_m = encode(W_m x_m), the Linear projection that feeds the purifier gate; the BPR
above uses z, so it is L_S; e_u for L_U is final_u.

Deviations from the paper / reference code, written down:
- Embedding tables use Xavier-normal init (the repository's convention), not Xavier-uniform.
- train_features (default true, as the reference code) fine-tunes copies of the raw feature
  tables; the kNN graphs are built once from the original features and stay frozen.
- InfoNCE is the batch cross-entropy form (same value as the reference's exp/sum form, but
  stable); the reference's fixed 0.2 temperature is the `temperature` key.
- The node-level InfoNCE terms run over the distinct users / items of the batch. The reference
  uses one row per triple, so a user or item drawn twice is its own negative (identical rows
  in the denominator); the distinct rows remove those false negatives, and the [b, b] logits
  shrink to the distinct count (measurements: docs/experiments.md).
"""
from __future__ import annotations

import torch
from torch import nn

from config.backbones import MGCNConfig
from models.base import DecayingLR, l2_penalty, modality_inputs, seeded_embedding
from models.graph import knn_graph, normalized_bipartite
from models.layers import AttentionFuser, gate, item_graph_view, node_contrast, propagate, view_graphs
from models.mrdib import bpr_loss


class MGCN(DecayingLR):
    Config = MGCNConfig
    graph_names = ('adjacency', 'item_graph_image', 'item_graph_text')
    graph_params = ('knn_k',)  # the config keys build_graphs reads

    def __init__(self, ctx, config: MGCNConfig):
        super().__init__(ctx, config)
        d = ctx.embedding_dim
        self.user_emb = seeded_embedding(ctx.n_users, d)
        self.item_emb = seeded_embedding(ctx.n_items, d)
        self.raw, self.projections = modality_inputs(ctx, self.modalities, d, config.train_features)
        self.purifiers = nn.ModuleDict({m: gate(d) for m in self.modalities})
        self.preferences = nn.ModuleDict({m: gate(d) for m in self.modalities})
        self.fuser = AttentionFuser(d)
        self.adjacency, self.user_item, self.item_graphs = view_graphs(self.fixed_graphs(), ctx, self.modalities)
        self.attach_mrdib({m: d for m in self.modalities}, user_dim=d)

    @classmethod
    def build_graphs(cls, ctx, config):
        """adjacency: normalised user-item graph; item_graph_<m>: weighted kNN graph of modality m."""
        return {"adjacency": normalized_bipartite(ctx.n_users, ctx.n_items, ctx.train),
                **{f"item_graph_{m}": knn_graph(ctx.features[m], config.knn_k, weighted=True)
                   for m in cls.modalities}}

    def modality_view(self, m: str) -> torch.Tensor:
        """Purified item IDs of modality m on its item graph, users by aggregation -> [U+I, d]."""
        z = self.encode(m, self.projections[m](self.raw[m].all()))                         # [I, d]
        return item_graph_view(self.item_emb.weight * self.purifiers[m](z), self.item_graphs[m],
                               self.user_item, self.config.n_ii_layers)

    def views(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(final, side, content), each [U+I, d], users first."""
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        content = propagate(self.adjacency, ego, self.config.n_ui_layers)
        views = [self.modality_view(m) for m in self.modalities]
        common = self.fuser(views)
        specific = sum(self.preferences[m](content) * (v - common) for m, v in zip(self.modalities, views))
        side = (specific + common) / 3
        return content + side, side, content

    def all_embeddings(self):
        final = self.views()[0]
        return final[: self.ctx.n_users], final[self.ctx.n_users:]

    def backbone_loss(self, users, pos, neg):
        final, side, content = self.views()
        n_u, tau = self.ctx.n_users, self.config.temperature
        u, p, n = final[users], final[n_u + pos], final[n_u + neg]
        contrast = node_contrast(side, content, users, pos, n_u, tau)
        terms = {"bpr": bpr_loss((u * p).sum(-1), (u * n).sum(-1)),
                 "reg": self.config.reg_weight * l2_penalty(u, p, n),
                 "cl": self.config.cl_weight * contrast}
        return terms, u


BACKBONE = MGCN
