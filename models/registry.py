"""The explicit registry of backbones: name -> class. Add a backbone here and in params.yaml."""
from __future__ import annotations

from models.base import Recommender
from models.bprmf import BPRMF
from models.dualgnn import DualGNN
from models.freedom import FREEDOM
from models.lightgcn import LightGCN
from models.mgcn import MGCN
from models.mmgcn import MMGCN
from models.pop import Pop
from models.soil import SOIL
from models.vbpr import VBPR

BACKBONES: dict[str, type[Recommender]] = {
    "pop": Pop,
    "bprmf": BPRMF,
    "lightgcn": LightGCN,
    "vbpr": VBPR,
    "mmgcn": MMGCN,
    "dualgnn": DualGNN,
    "freedom": FREEDOM,
    "mgcn": MGCN,
    "soil": SOIL,
}


def get_backbone(name: str) -> type[Recommender]:
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; known backbones: {sorted(BACKBONES)}") from None
