"""The embedded default dataset: a seeded synthetic benchmark with planted multimodal structure.

Every item has latent factors of five kinds (the Partial Information Decomposition view that
MRdIB builds on, Williams & Beer 2010):

- unique-visual : carried by the image features only
- unique-text   : carried by the text features only
- redundant     : carried by both
- synergistic   : s = a_v * a_t, where a_v is in the image features and a_t in the text;
                  each alone is uncorrelated with s, only their combination reveals it
- nuisance      : large-variance "background clutter" dimensions in each modality that no
                  user cares about (what an information bottleneck should drop)

Users' preferences depend on the informative factors (unique, redundant, synergistic) plus
an item popularity bias. Each modality's latents are linearly mixed into its feature space
with noise (`nonlinearity` > 0 first warps them with a random tanh layer that entangles clutter and
signal; `interactions_per_item` sets n_items from the items' side of sparsity); text rows are
L2-normalised like sentence embeddings. Interactions are sampled
per user without replacement (Gumbel top-k on preference / temperature) and split with the
protocol's per-user recipe. `structure.json` records the layout, `item_factors.npy` the
ground-truth informative factors, `item_latents.npz` every planted block of `item_latents()` (clutter
and the synergy halves included; row i = itemID i), which tasks/probe.py probes the models' latents for.

    python -m tasks.download --dataset synthetic   (the pipeline's way to write it)
"""
from __future__ import annotations

import io
import json
import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from config.sections import SyntheticConfig
from pipeline.split import split_per_user

log = logging.getLogger(__name__)


def item_latents(cfg: SyntheticConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = cfg.n_items
    draw = lambda k, scale=1.0: rng.normal(0.0, scale, size=(n, k)).astype(np.float32)  # noqa: E731
    return {"unique_visual": draw(cfg.unique_visual), "unique_text": draw(cfg.unique_text),
            "redundant": draw(cfg.redundant), "synergy_visual": draw(cfg.synergistic),
            "synergy_text": draw(cfg.synergistic), "nuisance_visual": draw(cfg.nuisance_visual, cfg.nuisance_scale),
            "nuisance_text": draw(cfg.nuisance_text, cfg.nuisance_scale)}


MODALITY_BLOCKS = {
    "image": ("unique_visual", "redundant", "synergy_visual", "nuisance_visual"),
    "text": ("unique_text", "redundant", "synergy_text", "nuisance_text"),
}


def mix_features(blocks: list[np.ndarray], dim: int, noise: float, rng: np.random.Generator,
                 nonlinearity: float = 0.0, gain: float = 1.0,
                 nonlinear_rng: np.random.Generator | None = None) -> np.ndarray:
    """latent @ mixing + noise. With nonlinearity > 0 the latent is warped first, latent -> (1 - nl) *
    latent + nl * warp(latent) (warp drawn from `nonlinear_rng`: `rng` draws what it draws at 0), mapped out
    by the same mixing and rescaled to the linear mix's std, so that the noise keeps its share."""
    latent = np.concatenate(blocks, axis=1)                       # [n_items, k]
    mixing = rng.normal(0.0, 1.0 / np.sqrt(latent.shape[1]), size=(latent.shape[1], dim))
    mixed = latent @ mixing
    if nonlinearity > 0:
        warped = ((1 - nonlinearity) * latent + nonlinearity * warp(latent, gain, nonlinear_rng)) @ mixing
        mixed = warped * (mixed.std() / warped.std())
    return (mixed + rng.normal(0.0, noise, size=(len(latent), dim))).astype(np.float32)


def warp(latent: np.ndarray, gain: float, rng: np.random.Generator) -> np.ndarray:
    """tanh(gain * latent @ W / sqrt(k)) with a random square W [k, k], scaled to the latent's std: every
    unit mixes every latent, clutter included (being larger, the clutter drives tanh's saturation), so no
    linear map of the features separates clutter from signal; W is invertible (almost surely) and tanh
    monotone, so a non-linear encoder can still undo the warp."""
    k = latent.shape[1]
    hidden = np.tanh(latent @ rng.normal(0.0, gain / np.sqrt(k), size=(k, k)))
    return hidden * (latent.std() / hidden.std())


def informative_factors(latents: dict[str, np.ndarray]) -> np.ndarray:
    """[n_items, k] factors users care about: unique, redundant and synergistic."""
    synergy = latents["synergy_visual"] * latents["synergy_text"]
    return np.concatenate([latents["unique_visual"], latents["unique_text"], latents["redundant"], synergy], axis=1)


def sample_interactions(cfg: SyntheticConfig, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[n, 2] sorted (user, item) pairs: Gumbel top-k on affinity, >= 5 per user."""
    preferences = rng.normal(size=(cfg.n_users, factors.shape[1])).astype(np.float32)
    popularity = rng.normal(0.0, cfg.popularity_std, size=cfg.n_items).astype(np.float32)
    counts = np.minimum(5 + rng.poisson(cfg.mean_interactions - 5, size=cfg.n_users), cfg.n_items // 2)
    scale = cfg.preference_strength / np.sqrt(factors.shape[1])
    pairs = []
    for start in range(0, cfg.n_users, 1024):  # blocks keep memory at 1024 x n_items
        block = slice(start, min(start + 1024, cfg.n_users))
        logits = scale * preferences[block] @ factors.T + popularity
        logits += rng.gumbel(size=logits.shape)
        ranked = np.argsort(-logits, axis=1)
        for offset, row in enumerate(ranked):
            user = start + offset
            pairs.append(np.column_stack([np.full(counts[user], user), np.sort(row[: counts[user]])]))
    return np.concatenate(pairs).astype(np.int64)


def generate(cfg: SyntheticConfig, seed: int) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict]:
    """(interactions with x_label, {"image": ..., "text": ...}, structure record)."""
    cfg = cfg.resolved()  # n_items from interactions_per_item, where that is set
    rng = np.random.default_rng(seed)
    # the non-linear mix draws from its own child stream: `rng` draws the same numbers at any nonlinearity,
    # so latents, interactions and split stay those of the linear data and only the features change
    warp_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0]) if cfg.nonlinearity > 0 else None
    latents = item_latents(cfg, rng)
    features = {m: mix_features([latents[b] for b in blocks], dim, cfg.feature_noise, rng,
                                cfg.nonlinearity, cfg.nonlinear_gain, warp_rng)
                for (m, blocks), dim in zip(MODALITY_BLOCKS.items(), (cfg.image_dim, cfg.text_dim))}
    features["text"] /= np.linalg.norm(features["text"], axis=1, keepdims=True)
    factors = informative_factors(latents)
    pairs = sample_interactions(cfg, factors, rng)
    used = np.unique(pairs[:, 1])  # items nobody chose would leave gaps in the ids: drop them
    remap = np.full(cfg.n_items, -1)
    remap[used] = np.arange(len(used))
    pairs[:, 1] = remap[pairs[:, 1]]
    frame = pd.DataFrame({"userID": pairs[:, 0], "itemID": pairs[:, 1],
                          "x_label": split_per_user(pairs[:, 0], rng)})
    features = {m: f[used] for m, f in features.items()}
    structure = {"seed": seed, "config": cfg.model_dump(), "n_items_kept": int(len(used)),
                 "interactions_per_item_kept": round(len(pairs) / len(used), 4),  # over the kept items
                 "modality_latent_blocks": {m: {b: latents[b].shape[1] for b in blocks}
                                            for m, blocks in MODALITY_BLOCKS.items()},
                 "item_factor_columns": _factor_columns(cfg),
                 "notes": "synergy_k = synergy_visual_k * synergy_text_k; nuisance blocks carry no preference"}
    planted = {LATENT + name: block[used] for name, block in latents.items()}  # no random draw: data unchanged
    return frame, features | {"factors": factors[used]} | planted, structure


def _factor_columns(cfg: SyntheticConfig) -> list[str]:
    names = [("unique_visual", cfg.unique_visual), ("unique_text", cfg.unique_text),
             ("redundant", cfg.redundant), ("synergistic", cfg.synergistic)]
    return [f"{name}_{k}" for name, count in names for k in range(count)]


LATENT = "latent/"  # generate()'s arrays: "latent/<block>" = that planted block for the kept items


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez with fixed zip timestamps: the same arrays give the same bytes, so DVC sees an unchanged
    download and does not retrain everything downstream when only the generator's code changed."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, value)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue())


def write_dataset(out: Path, frame: pd.DataFrame, arrays: dict[str, np.ndarray], structure: dict) -> None:
    """Write into a temporary folder, then rename: a failed run leaves no half dataset."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    frame.to_csv(tmp / f"{out.name}.inter", sep="\t", index=False)
    np.save(tmp / "image_feat.npy", arrays["image"])
    np.save(tmp / "text_feat.npy", arrays["text"])
    np.save(tmp / "item_factors.npy", arrays["factors"])
    save_npz(tmp / "item_latents.npz", {k[len(LATENT):]: v for k, v in arrays.items() if k.startswith(LATENT)})
    (tmp / "structure.json").write_text(json.dumps(structure, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)

