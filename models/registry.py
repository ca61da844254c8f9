"""Backbone name -> model class. A backbone named N lives in `models/N.py` (its class: `BACKBONE`) and
has its schema in `config.backbones.BACKBONES[N]`; only the asked-for module is imported."""
from __future__ import annotations

from importlib import import_module

from config.backbones import BACKBONES
from models.base import Recommender


def get_backbone(name: str) -> type[Recommender]:
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; known backbones: {sorted(BACKBONES)}")
    return import_module(f"models.{name}").BACKBONE


def backbone_classes() -> dict[str, type[Recommender]]:
    """Every backbone's class, by name (imports all nine: for tests and benchmarks)."""
    return {name: get_backbone(name) for name in BACKBONES}
