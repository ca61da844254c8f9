"""Pop: rank items by their number of train interactions, the same list for every user.

The classic non-personalised baseline (e.g. Rendle et al., "BPR", UAI 2009, section 6).
"""
from __future__ import annotations

import numpy as np
import torch

from config.backbones import PopConfig
from models.base import Recommender


class Pop(Recommender):
    Config = PopConfig
    trainable = False

    def __init__(self, ctx, config):
        super().__init__(ctx, config)
        counts = np.bincount(ctx.train[:, 1], minlength=ctx.n_items).astype(np.float32)
        self.register_buffer("popularity", torch.as_tensor(counts, device=ctx.device))  # [n_items]

    def full_scores(self, users: torch.Tensor) -> torch.Tensor:
        return self.popularity.expand(len(users), -1).clone()

    def prepare_eval(self) -> None:
        """Nothing to precompute."""


BACKBONE = Pop
