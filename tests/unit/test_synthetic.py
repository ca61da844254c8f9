"""The embedded synthetic benchmark: seeded, in the field's layout, with its structure recorded."""
import json

import numpy as np
import pytest

from config.sections import SyntheticConfig
from models.data import load_dataset
from pipeline.split import split_sizes
from pipeline.synthetic import generate, informative_factors, item_latents, write_dataset


@pytest.mark.parametrize("n,expected", [(5, (1, 1)), (9, (1, 1)), (10, (1, 1)), (15, (1, 2)), (20, (2, 2)),
                                        (31, (3, 3))])
def test_split_recipe(n, expected):
    assert split_sizes(n) == expected


def test_written_dataset_loads_and_follows_the_recipe(tiny_synthetic):
    data = load_dataset(tiny_synthetic)
    assert data.features["image"].shape == (data.n_items, 48) and data.features["text"].shape == (data.n_items, 32)
    assert np.allclose(np.linalg.norm(data.features["text"], axis=1), 1.0, atol=1e-5)
    per_user = {split: np.bincount(getattr(data, split)[:, 0], minlength=data.n_users)
                for split in ("train", "valid", "test")}
    totals = per_user["train"] + per_user["valid"] + per_user["test"]
    assert totals.min() >= 5
    for user in range(data.n_users):
        assert (per_user["valid"][user], per_user["test"][user]) == split_sizes(totals[user])
    structure = json.loads((tiny_synthetic / "structure.json").read_text())
    assert structure["modality_latent_blocks"]["image"]["unique_visual"] == 4
    assert "unique_visual" not in structure["modality_latent_blocks"]["text"]
    assert np.load(tiny_synthetic / "item_factors.npy").shape == (data.n_items, len(structure["item_factor_columns"]))


def test_same_seed_same_data_other_seed_differs(tmp_path):
    cfg = SyntheticConfig(n_users=50, n_items=80, image_dim=8, text_dim=8)
    a, b, c = generate(cfg, 1), generate(cfg, 1), generate(cfg, 2)
    assert a[0].equals(b[0]) and np.array_equal(a[1]["image"], b[1]["image"])
    assert not a[0].equals(c[0])
    write_dataset(tmp_path / "x", *a)
    write_dataset(tmp_path / "x", *c)  # rewriting replaces the folder whole
    assert load_dataset(tmp_path / "x").n_users == 50 and not (tmp_path / "x.tmp").exists()


def test_synergy_is_invisible_to_each_modality_alone():
    cfg = SyntheticConfig(n_items=20000, synergistic=1)
    latents = item_latents(cfg, np.random.default_rng(0))
    synergy = informative_factors(latents)[:, -1]
    for part in ("synergy_visual", "synergy_text"):
        assert abs(np.corrcoef(synergy, latents[part][:, 0])[0, 1]) < 0.03
    assert np.allclose(synergy, latents["synergy_visual"][:, 0] * latents["synergy_text"][:, 0])
