"""The item latents of a trained model, rebuilt from its best.pt: one place for the report's t-SNE
(tasks/report.py) and the probe of the latents (tasks/probe.py).

- item_latents(model, n_items): what `model.encode` returns per modality for every item: the
  backbone's projection h_m for the base variant, mu_m for MRdIB (its encoder in evaluation).
- scoring_items(model): the item representation the model scores with (all_embeddings()).
- load_run_model(params, data_root, graphs_root, run): the model of a run folder, rebuilt with the
  run's seed, tuned alphas and fixed graphs, its best.pt loaded, in evaluation mode.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from config.params import Params
from config.sections import ABLATIONS, ablated
from models.base import Recommender
from models.data import Dataset, load_dataset
from models.trainer import pick_device
from pipeline.runs import Run
from pipeline.training import build_model


class LatentsUnavailable(RuntimeError):
    """The backbone never encodes every item, so there is no latent table to embed."""


@torch.no_grad()
def item_latents(model, n_items: int) -> dict[str, np.ndarray]:
    """What `model.encode` returns per modality for every item [n_items, d]: h_m for base, mu_m for MRdIB.

    Most backbones encode all items in prepare_eval(); one that encodes only a batch's items in its
    loss (FREEDOM) is asked for a loss over a batch holding every item instead.
    """
    captured: dict[str, dict[str, torch.Tensor]] = {}
    original = model.encode

    def recording(modality, h, items=None):
        z = original(modality, h, items)
        rows = torch.arange(len(z), device=z.device) if items is None else items
        if items is not None or len(z) == n_items:
            table = captured.setdefault(modality, {"z": torch.full((n_items, z.shape[1]), float("nan")),
                                                   "seen": torch.zeros(n_items, dtype=torch.bool)})
            table["z"][rows.cpu()], table["seen"][rows.cpu()] = z.float().cpu(), True
        return z

    model.encode = recording  # an instance attribute shadows the method for this model only
    try:
        model.eval()
        model.prepare_eval()
        if not complete(captured, model.modalities):
            everything = torch.arange(n_items, device=model.ctx.device)
            model.backbone_loss(torch.zeros_like(everything), everything, everything)
    finally:
        del model.encode
    if not model.modalities or not complete(captured, model.modalities):
        raise LatentsUnavailable(f"{type(model).__name__} does not encode every item through encode()")
    return {m: captured[m]["z"].numpy() for m in model.modalities}


def complete(captured: dict, modalities) -> bool:
    return all(m in captured and bool(captured[m]["seen"].all()) for m in modalities)


@torch.no_grad()
def scoring_items(model) -> np.ndarray:
    """[n_items, d'] the item representation the model scores with (all_embeddings(), as prepare_eval() keeps
    it for full_scores: not computed twice after item_latents); LatentsUnavailable if it has none (Pop)."""
    model.eval()
    cache = getattr(model, "_eval_cache", None)
    try:
        items = cache[1] if cache is not None else model.all_embeddings()[1]
    except NotImplementedError:
        raise LatentsUnavailable(f"{type(model).__name__} has no item representation") from None
    return items.float().cpu().numpy()


@lru_cache(maxsize=4)
def _dataset(folder: Path, standin: bool, seed: int, version: tuple) -> Dataset:
    return load_dataset(folder, standin=standin, seed=seed)


def run_dataset(data_root: Path, run: Run) -> Dataset:
    """The run's dataset (cached: the runs of one dataset share it); stand-ins are regenerated from the
    run's seed, so they are the very noise the run trained on."""
    folder, standin = (Path(data_root) / run.dataset).resolve(), bool(run.metrics.get("standin_features"))
    version = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(folder.glob("*"))) if folder.is_dir() else ()
    return _dataset(folder, standin, run.seed if standin else 0, version)  # the seed only draws stand-ins


def load_run_model(params: Params, data_root: Path, graphs_root: Path, run: Run,
                   dataset: Dataset | None = None) -> Recommender:
    """Rebuild the run's model from best.pt (its fixed graphs from the graphs stage's file where there is
    one), in evaluation mode. An ablation setting (no_kl, ...) is the mrdib variant, ablated as tasks.train does."""
    params = params.for_dataset(run.dataset, run.backbone).model_copy(update={"seed": run.seed})
    mrdib = params.mrdib.model_copy(update=run.metrics.get("alphas") or {})
    if run.variant in ABLATIONS:  # its zeroed weights, and encoder_only's kept encoders
        mrdib = ablated(mrdib, run.variant)
    params = params.model_copy(update={"mrdib": mrdib})
    dataset = dataset if dataset is not None else run_dataset(data_root, run)
    device = pick_device(params.train.device)
    graphs = Path(graphs_root) / run.dataset / f"{run.backbone}.npz"
    variant = "mrdib" if run.variant in ABLATIONS else run.variant
    model = build_model(params, dataset, run.backbone, variant, device, graphs if graphs.is_file() else None)
    model.load_state_dict(torch.load(run.folder / "best.pt", map_location=device, weights_only=True))
    return model.eval()


def run_latents(params: Params, data_root: Path, graphs_root: Path, run: Run) -> tuple[dict, np.ndarray]:
    """(latents per modality of the run's model, item train popularity [n_items])."""
    dataset = run_dataset(data_root, run)
    model = load_run_model(params, data_root, graphs_root, run, dataset)
    return item_latents(model, dataset.n_items), np.bincount(dataset.train[:, 1], minlength=dataset.n_items)
