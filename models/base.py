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

from config.backbones import BackboneConfig
from config.sections import MRdIBConfig
from models.mrdib import MRdIB


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

    Config: type[BackboneConfig] = BackboneConfig  # its schema in config.backbones
    modalities: tuple[str, ...] = ()     # features the backbone needs: its Config's (set below)
    trainable = True
    graph_names: tuple[str, ...] = ()    # what build_graphs returns (checked when graphs are handed over)
    graph_params: tuple[str, ...] = ()   # the config keys build_graphs reads

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.modalities = cls.Config.modalities  # one source: the schema, readable without torch

    def __init__(self, ctx: ModelContext, config: BackboneConfig):
        super().__init__()
        missing = [m for m in self.modalities if m not in ctx.features]
        if missing:
            raise ValueError(f"{type(self).__name__} needs {list(self.modalities)} features; the dataset has "
                             f"no {missing} (provide *_feat.npy or ask for stand-in features explicitly)")
        self.ctx, self.config = ctx, config
        self.mrdib: MRdIB | None = None
        self._eval_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def build_graphs(cls, ctx: ModelContext, config: BackboneConfig) -> dict[str, sp.csr_matrix]:
        """The fixed (data-determined) graphs the backbone needs, by name; the graphs stage saves them."""
        return {}

    @classmethod
    def graph_key(cls, ctx: ModelContext, config: BackboneConfig) -> str:
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

    def attach_mrdib(self, dims: dict[str, int], user_dim: int | None, fused_weight: float = 0.0) -> None:
        """Build the plug-in (mrdib variant with a non-zero alpha); call after the backbone's own layers.

        fused_weight > 0: the backbone's score does not use z, so the plug-in adds the explicit
        fused L_S head with this weight. user_dim None: the backbone gives no user vector e_u.

        With every alpha at 0 nothing is built, so the model is exactly the base backbone (even its
        memory layout, which BLAS kernels can be sensitive to in the last bits). With MRdIB active,
        a modality set other than (image, text) or user_dim None is a ValueError naming the backbone.
        """
        if self.ctx.mrdib is not None and self.ctx.mrdib.active:
            self.mrdib = MRdIB(dims, user_dim, self.ctx.mrdib, self.ctx.seed, fused_weight=fused_weight,
                               owner=type(self).__name__)

    def encode(self, modality: str, h: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        return self.mrdib.encode(modality, h, items) if self.mrdib is not None else h

    def calculate_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named loss terms for a batch of (user, positive, negative) triples [b] each."""
        self._eval_cache = None
        terms, user_rep = self.backbone_loss(users, pos, neg)
        if self.mrdib is not None:
            if user_rep is None:
                raise RuntimeError(f"{type(self).__name__}.backbone_loss gave no user vector, but the MRdIB "
                                   f"plug-in is attached (attach_mrdib with user_dim None is refused)")
            terms.update(self.mrdib.loss_terms(user_rep, pos, neg))
        return terms

    def backbone_loss(self, users, pos, neg) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        raise NotImplementedError

    def all_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def on_epoch_start(self, epoch: int) -> None:
        """Hook, e.g. to resample a dropped-out graph."""

    def lr_factor(self, epoch: int) -> float:
        """Learning-rate multiplier for (1-based) `epoch`; the trainer sets lr = train.lr * this. 1: constant."""
        return 1.0

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


class DecayingLR(Recommender):
    """A backbone whose learning rate decays smoothly, lr_e = lr * lr_decay ** ((e - 1) / lr_decay_epochs):
    by 0.96 every 50 epochs by default, the field's MGCN schedule (MMRec's learning_rate_scheduler
    [0.96, 50], a LambdaLR of fac ** (epoch / step)). Its Config derives from DecayingLRConfig."""

    def lr_factor(self, epoch: int) -> float:
        return self.config.lr_decay ** ((epoch - 1) / self.config.lr_decay_epochs)


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
    """(FeatureTable per modality, Linear d_m -> dim per modality); trainable=True fine-tunes copies
    of the tables, as the FREEDOM / MGCN reference code does."""
    raw = nn.ModuleDict({m: FeatureTable(ctx.features[m], trainable) for m in modalities})
    projections = nn.ModuleDict({m: nn.Linear(ctx.features[m].shape[1], dim) for m in modalities})
    return raw, projections


class FeatureTable(nn.Module):
    """A raw feature table [n, d]: frozen (not in the state dict) or a fine-tuned copy (`weight`).

    rows(items) reads a batch of rows. For a fine-tuned table autograd would hand the optimiser a
    fresh dense [n, d] gradient each step, zero-filled, the batch's rows added, then freed: for
    Baby's 7,050 x 4,096 image table, 115 MB allocated, page-faulted and filled per step. Here the
    gradient lives in one buffer instead: the first read of a step zeroes the rows the previous
    step wrote and the batch's rows are added. The optimiser sees the same dense gradient.
    """

    def __init__(self, values: torch.Tensor, trainable: bool):
        super().__init__()
        self.trainable = trainable
        if trainable:
            self.weight = nn.Parameter(values.clone())
        else:
            self.frozen = values  # a plain attribute: shared with the dataset, not saved
        self._grad: torch.Tensor | None = None      # the persistent gradient buffer
        self._written: torch.Tensor | None = None   # rows of it that may be non-zero (None: any)

    def all(self) -> torch.Tensor:
        """The whole table (autograd's own dense gradient: every row is read)."""
        return self.weight if self.trainable else self.frozen

    def rows(self, items: torch.Tensor) -> torch.Tensor:
        """table[items] -> [len(items), d]."""
        if not self.trainable:
            return self.frozen[items]
        return _RowsWithPersistentGrad.apply(self.weight, items, self)

    def _accumulate(self, items: torch.Tensor, grad_rows: torch.Tensor) -> None:
        """Add grad_rows at `items` to weight.grad, starting from zero in each new step."""
        weight = self.weight
        if weight.grad is None:                     # a new step: the optimiser cleared the gradient
            if self._grad is None:
                self._grad = torch.zeros_like(weight)
            elif self._written is None:
                self._grad.zero_()
            else:
                self._grad.index_fill_(0, self._written, 0.0)
            weight.grad, self._written = self._grad, items
        elif weight.grad is self._grad:             # a second read in the same step (or zeroed in place)
            if self._written is not None:
                self._written = torch.cat([self._written, items])
                if len(self._written) > len(weight):  # cheaper to zero it all next time
                    self._written = None
        else:                                       # a gradient this table did not make: add to it
            weight.grad.index_add_(0, items, grad_rows)
            return
        self._grad.index_add_(0, items, grad_rows)


class _RowsWithPersistentGrad(torch.autograd.Function):
    """table[items] whose backward writes the table's gradient through FeatureTable._accumulate."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, items: torch.Tensor, table: FeatureTable) -> torch.Tensor:
        ctx.items, ctx.table = items, table
        return weight[items]

    @staticmethod
    def backward(ctx, grad_rows: torch.Tensor):
        ctx.table._accumulate(ctx.items, grad_rows)
        return None, None, None
