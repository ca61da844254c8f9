"""FREEDOM: a frozen multimodal item-item graph and a denoised (pruned) user-item graph.

Zhou & Shen. "A Tale of Two Graphs: Freezing and Denoising Graph Structures for Multimodal
Recommendation", ACM MM 2023.

- Frozen item graph: per modality the binary top-k cosine graph of the raw features, sym
  normalised, mixed S = w_v S_v + (1 - w_v) S_t (w_v = 0.1); built once, never learned.
- Denoised user-item graph: each epoch keeps a (1 - dropout) share of the interactions, drawn
  without replacement with probability proportional to 1 / sqrt(d_u d_i), and re-normalises;
  evaluation uses the full graph.
- h = S^L_ii e_item (1 layer), LightGCN mean over L_ui = 2 layers of the (pruned) graph;
  user = LightGCN_u, item = LightGCN_i + h, score = <user, item>.
- L = BPR + lambda * sum_m BPR(<user, W_m x_m[i+]>, <user, W_m x_m[i-]>), the projected raw
  features as auxiliary item vectors (lambda is the reference's `reg_weight`).

MRdIB: z_m = encode(W_m x_m), the Linear 4096 -> 64 / 384 -> 64 of the auxiliary losses. The
score does not use z, so it passes `fused_weight` to the plug-in, which adds the explicit L_S head on
(z_v, z_t). e_u for L_U and L_S is the final user representation.

The fused head is weighted by `fused_weight` (default 1e-2), not 1. z reaches FREEDOM's score only
through the gradients its BPR terms send into e_u, and FREEDOM itself gives its z-based BPR terms a
small weight (lambda = 1e-4) for that reason; at weight 1 the head's BPR on features pulls e_u as
hard as the main loss does. The weight was chosen on validation among {1e-4, 1e-2, 1}
(measurements: docs/experiments.md). This is a deviation from the spec's unweighted L_S.

Deviations, written down:
- Only the batch's unique items are projected for the auxiliary losses (the reference projects
  every item each batch): identical values, less work.
- train_features (default true, as the reference code) fine-tunes copies of the raw feature
  tables; the item graph is built from the original features and stays frozen.
- The pruned graph of epoch e is drawn from a generator seeded by (seed, e), so a resumed run
  sees the same graphs; before the first `on_epoch_start` the epoch-0 draw is used.
- Xavier-normal embedding init (repository convention) instead of Xavier-uniform.
"""
from __future__ import annotations

import numpy as np
import torch

from config.backbones import FREEDOMConfig
from models.base import Recommender, modality_inputs, seeded_embedding
from models.graph import SparseGraph, degree_sensitive_edges, knn_graph, normalized_bipartite
from models.layers import propagate
from models.mrdib import bpr_loss


class FREEDOM(Recommender):
    Config = FREEDOMConfig
    graph_names = ('item_graph', 'adjacency')
    graph_params = ('knn_k', 'image_weight')  # the config keys build_graphs reads

    def __init__(self, ctx, config: FREEDOMConfig):
        super().__init__(ctx, config)
        d = ctx.embedding_dim
        self.user_emb = seeded_embedding(ctx.n_users, d)
        self.item_emb = seeded_embedding(ctx.n_items, d)
        self.raw, self.projections = modality_inputs(ctx, self.modalities, d, config.train_features)
        graphs = self.fixed_graphs()
        self.item_graph = SparseGraph(graphs["item_graph"], ctx.device)                # [I, I], frozen
        self.adjacency = SparseGraph(graphs["adjacency"], ctx.device)                  # [U+I, U+I]
        self.train_adjacency = self.pruned_adjacency(0)                                 # [U+I, U+I]
        self.attach_mrdib({m: d for m in self.modalities}, user_dim=d, fused_weight=config.fused_weight)

    @classmethod
    def build_graphs(cls, ctx, config):
        """item_graph: the frozen mix of the modalities' kNN graphs; adjacency: normalised user-item graph."""
        mixed = (config.image_weight * knn_graph(ctx.features["image"], config.knn_k, weighted=False)
                 + (1 - config.image_weight) * knn_graph(ctx.features["text"], config.knn_k, weighted=False))
        return {"item_graph": mixed.tocsr(), "adjacency": normalized_bipartite(ctx.n_users, ctx.n_items, ctx.train)}

    def pruned_adjacency(self, epoch: int) -> torch.Tensor:
        """The normalised graph of a degree-sensitive sample of the edges, drawn for `epoch`."""
        if self.config.dropout <= 0:
            return self.adjacency
        seed = int(np.random.SeedSequence([self.ctx.seed, epoch]).generate_state(1)[0])
        kept = degree_sensitive_edges(self.ctx.n_users, self.ctx.n_items, self.ctx.train, 1 - self.config.dropout,
                                      torch.Generator().manual_seed(seed))
        return SparseGraph(normalized_bipartite(self.ctx.n_users, self.ctx.n_items, kept), self.ctx.device)

    def on_epoch_start(self, epoch: int) -> None:
        self.train_adjacency = self.pruned_adjacency(epoch)

    def embed(self, adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(users [U, d], items [I, d]) on the given user-item graph."""
        h = self.item_emb.weight
        for _ in range(self.config.n_ii_layers):
            h = self.item_graph @ h                                    # [I, d]
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        out = propagate(adjacency, ego, self.config.n_ui_layers)                       # [U+I, d]
        return out[: self.ctx.n_users], out[self.ctx.n_users:] + h

    def all_embeddings(self):
        return self.embed(self.adjacency)

    def backbone_loss(self, users, pos, neg):
        user_reps, item_reps = self.embed(self.train_adjacency)
        u = user_reps[users]                                                           # [b, d]
        items = torch.unique(torch.cat([pos, neg]))
        position = torch.empty(self.ctx.n_items, dtype=torch.long, device=items.device)
        position[items] = torch.arange(len(items), device=items.device)
        auxiliary = 0.0
        for m in self.modalities:
            z = self.encode(m, self.projections[m](self.raw[m].rows(items)), items)        # [n_unique, d]
            auxiliary = auxiliary + bpr_loss((u * z[position[pos]]).sum(-1), (u * z[position[neg]]).sum(-1))
        terms = {"bpr": bpr_loss((u * item_reps[pos]).sum(-1), (u * item_reps[neg]).sum(-1)),
                 "modal": self.config.modality_weight * auxiliary}
        return terms, u


BACKBONE = FREEDOM
