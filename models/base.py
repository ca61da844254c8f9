"""The contract every backbone follows, and the context it is built from.

A backbone is an `nn.Module` with
    backbone_loss(users, pos, neg) -> ({term name: weighted loss}, e_u for L_U or None)
    all_embeddings()               -> (user reps [n_users, d], item reps [n_items, d])
and optionally overrides `full_scores`, `prepare_eval` and `on_epoch_start`.
Multimodal backbones pass each modality projection through `self.encode(m, h)`, which is
where the MRdIB plug-in sits (the identity for the base variant).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from models.config import StrictConfig
from models.mrdib import MRdIB, MRdIBConfig


@dataclass
class ModelContext:
    """What a backbone may know about the data and the run."""

    n_users: int
    n_items: int
    train: np.ndarray                    # [n_train, 2] (user, item) int64
    features: dict[str, torch.Tensor]    # "image"/"text" -> [n_items, d] float32, on `device`
    embedding_dim: int
    device: torch.device
    seed: int
    mrdib: MRdIBConfig | None = None     # None: the base variant
    graphs: dict[str, sp.csr_matrix] | None = None  # fixed graphs from the graphs stage; None: build them


class Recommender(nn.Module):
    """Base class: routes the loss through MRdIB and scores by dot product by default."""

    Config: type[StrictConfig] = StrictConfig
    modalities: tuple[str, ...] = ()     # features the backbone needs
    trainable = True
    fused_head = False                   # True where the score does not use z (explicit L_S head)
    graph_names: tuple[str, ...] = ()    # what build_graphs returns (checked when graphs are handed over)
    graph_params: tuple[str, ...] = ()   # the config keys build_graphs reads

    def __init__(self, ctx: ModelContext, config: StrictConfig):
        super().__init__()
        missing = [m for m in self.modalities if m not in ctx.features]
        if missing:
            raise ValueError(f"{type(self).__name__} needs {list(self.modalities)} features; the dataset has "
                             f"no {missing} (provide *_feat.npy or ask for stand-in features explicitly)")
        self.ctx, self.config = ctx, config
        self.mrdib: MRdIB | None = None
        self._eval_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def build_graphs(cls, ctx: ModelContext, config: StrictConfig) -> dict[str, sp.csr_matrix]:
        """The fixed (data-determined) graphs the backbone needs, by name; the graphs stage saves them."""
        return {}

    @classmethod
    def graph_key(cls, ctx: ModelContext, config: StrictConfig) -> str:
        """Identifies everything build_graphs reads: backbone, its config, the train pairs, the features."""
        settings = {key: getattr(config, key) for key in cls.graph_params}
        digest = hashlib.sha256(json.dumps([cls.__name__, settings, ctx.n_users, ctx.n_items],
                                           sort_keys=True).encode())
        digest.update(np.ascontiguousarray(ctx.train).tobytes())
        for m in sorted(cls.modalities):
            digest.update(ctx.features[m].detach().cpu().numpy().tobytes())
        return digest.hexdigest()[:20]

    def fixed_graphs(self) -> dict[str, sp.csr_matrix]:
        """The graphs handed over in ctx.graphs (by the graphs stage), else built here."""
        if self.ctx.graphs is None:
            return self.build_graphs(self.ctx, self.config)
        missing = set(self.graph_names) - set(self.ctx.graphs)
        if missing:
            raise ValueError(f"{type(self).__name__}: the given graphs lack {sorted(missing)}")
        return self.ctx.graphs

    def attach_mrdib(self, dims: dict[str, int], user_dim: int) -> None:
        """Build the plug-in (mrdib variant with a non-zero alpha); call after the backbone's own layers.

        With every alpha at 0 nothing is built, so the model is exactly the base backbone (even its
        memory layout, which BLAS kernels can be sensitive to in the last bits).
        """
        if self.ctx.mrdib is not None and self.ctx.mrdib.active:
            self.mrdib = MRdIB(dims, user_dim, self.ctx.mrdib, self.ctx.seed, fused_head=self.fused_head)

    def encode(self, modality: str, h: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        return self.mrdib.encode(modality, h, items) if self.mrdib is not None else h

    def calculate_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named loss terms for a batch of (user, positive, negative) triples [b] each."""
        self._eval_cache = None
        terms, user_rep = self.backbone_loss(users, pos, neg)
        if self.mrdib is not None and user_rep is not None:
            terms.update(self.mrdib.loss_terms(user_rep, pos, neg))
        return terms

    def backbone_loss(self, users, pos, neg) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        raise NotImplementedError

    def all_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def on_epoch_start(self, epoch: int) -> None:
        """Hook, e.g. to resample a dropped-out graph."""

    @torch.no_grad()
    def prepare_eval(self) -> None:
        """Compute everything full_scores needs once per evaluation."""
        self._eval_cache = self.all_embeddings()

    def full_scores(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for `users` [b] -> [b, n_items]; call prepare_eval() first."""
        if self._eval_cache is None:
            self.prepare_eval()
        user_reps, item_reps = self._eval_cache
        return user_reps[users] @ item_reps.T


def l2_penalty(*tensors: torch.Tensor) -> torch.Tensor:
    """Sum of squared entries / 2, divided by the batch size (the first dimension)."""
    return sum(t.pow(2).sum() for t in tensors) / (2 * len(tensors[0]))


def seeded_embedding(n: int, dim: int, std: float | None = None) -> nn.Embedding:
    """An embedding table with Xavier-normal init (as the field's toolbox does), from the global RNG."""
    table = nn.Embedding(n, dim)
    if std is None:
        nn.init.xavier_normal_(table.weight)
    else:
        nn.init.normal_(table.weight, std=std)
    return table


def modality_inputs(ctx: ModelContext, modalities: tuple[str, ...], dim: int, trainable: bool):
    """(raw feature tables, Linear d_m -> dim per modality); trainable=True fine-tunes copies of the
    tables, as the FREEDOM / MGCN reference code does."""
    raw = nn.ParameterDict({m: nn.Parameter(ctx.features[m].clone()) for m in modalities}) \
        if trainable else ctx.features
    projections = nn.ModuleDict({m: nn.Linear(ctx.features[m].shape[1], dim) for m in modalities})
    return raw, projections
