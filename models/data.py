"""Datasets in the field's layout (the MMRec toolbox format).

A dataset folder holds one `<name>.inter` file (tab-separated, header `userID itemID x_label`,
optional `rating` / `timestamp` columns; x_label 0/1/2 = train/valid/test) and optionally
`image_feat.npy` [n_items, d_v] and `text_feat.npy` [n_items, d_t], row i = itemID i.

`load_dataset` refuses bad input with a `DataError` naming the file, the row or column and
what was expected. Stand-in features (seeded noise of the right shape) are only made when
asked for, and the returned `Dataset.standin_features` says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from config.sections import IMAGE_DIM, TEXT_DIM

REQUIRED_COLUMNS = ("userID", "itemID", "x_label")
SPLITS = {"train": 0, "valid": 1, "test": 2}
STANDIN_DIMS = {"image": IMAGE_DIM, "text": TEXT_DIM}  # the real features' widths


class DataError(ValueError):
    """Input data that does not match the expected layout."""


@dataclass
class Dataset:
    """Interactions split into train/valid/test, plus item features.

    Each split is an int64 array [n, 2] of (user, item) pairs.
    """

    name: str
    path: Path
    n_users: int
    n_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)  # "image"/"text" -> [n_items, d] float32
    standin_features: list[str] = field(default_factory=list)  # modalities filled with stand-ins

    def summary(self) -> str:
        feats = ", ".join(f"{m} {f.shape[1]}-d" + (" (STAND-IN)" if m in self.standin_features else "")
                          for m, f in self.features.items()) or "none"
        return (f"{self.name}: {self.n_users} users, {self.n_items} items, "
                f"{len(self.train)}/{len(self.valid)}/{len(self.test)} train/valid/test; features: {feats}")


def find_inter_file(folder: Path) -> Path:
    """The single `*.inter` file of a dataset folder."""
    found = sorted(folder.glob("*.inter"))
    if len(found) != 1:
        raise DataError(f"{folder}: expected exactly one *.inter file, found {[p.name for p in found] or 'none'}")
    return found[0]


def read_interactions(path: Path) -> pd.DataFrame:
    """Read and check an `.inter` file; returns the userID/itemID/x_label columns as int64."""
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a tab-separated table: {err}") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected header with {list(REQUIRED_COLUMNS)}, "
                        f"found {list(frame.columns)}")
    ints = pd.DataFrame({c: _parse_ids(frame[c], path, c) for c in REQUIRED_COLUMNS})
    bad_label = ~ints["x_label"].isin(SPLITS.values())
    if bad_label.any():
        _fail_at(path, bad_label, "x_label", "0 (train), 1 (valid) or 2 (test)", frame["x_label"])
    for column in ("userID", "itemID"):
        _check_contiguous(ints[column], path, column)
    duplicated = ints.duplicated(["userID", "itemID"], keep="first")
    if duplicated.any():
        _fail_at(path, duplicated, "userID,itemID", "each (user, item) pair once",
                 frame["userID"] + "," + frame["itemID"])
    users_with_train = np.unique(ints.loc[ints["x_label"] == 0, "userID"])
    no_train = np.setdiff1d(np.arange(ints["userID"].max() + 1), users_with_train)
    if len(no_train):
        raise DataError(f"{path}: column 'userID': user(s) {no_train[:10].tolist()} have no train row "
                        f"(x_label 0); every user needs at least one")
    return ints


def _parse_ids(column: pd.Series, path: Path, name: str) -> pd.Series:
    values = pd.to_numeric(column.str.strip(), errors="coerce")
    bad = values.isna() | (values % 1 != 0) | (values < 0)
    if bad.any():
        _fail_at(path, bad, name, "a non-negative integer", column)
    return values.astype(np.int64)


def _fail_at(path: Path, bad: pd.Series, column: str, expected: str, shown: pd.Series) -> None:
    row = int(np.flatnonzero(bad.to_numpy())[0])
    raise DataError(f"{path}: line {row + 2} (data row {row}), column '{column}': expected {expected}, "
                    f"got {shown.iloc[row]!r} ({int(bad.sum())} bad row(s) in all)")


def _check_contiguous(ids: pd.Series, path: Path, name: str) -> None:
    present = np.zeros(int(ids.max()) + 1, dtype=bool)
    present[ids.to_numpy()] = True
    gaps = np.flatnonzero(~present)
    if len(gaps):
        raise DataError(f"{path}: column '{name}': ids must be contiguous 0..{len(present) - 1}, "
                        f"but {len(gaps)} are missing, e.g. {gaps[:10].tolist()}")


def read_features(path: Path, n_items: int) -> np.ndarray:
    """Load a feature matrix [n_items, d] as float32, refusing wrong shapes and NaN/inf."""
    try:
        matrix = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable .npy array: {err}") from err
    if matrix.ndim != 2 or matrix.shape[0] != n_items:
        raise DataError(f"{path}: expected shape [{n_items} items, d], got {list(matrix.shape)}")
    if not np.issubdtype(matrix.dtype, np.floating):
        raise DataError(f"{path}: expected a float array, got dtype {matrix.dtype}")
    matrix = matrix.astype(np.float32, copy=False)
    finite = np.isfinite(matrix)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise DataError(f"{path}: row {row} (itemID {row}), column {col}: expected a finite value, "
                        f"got {matrix[row, col]} ({int((~finite).sum())} non-finite values in all)")
    return matrix


def standin_features(modality: str, n_items: int, seed: int) -> np.ndarray:
    """Seeded features with no signal: image 4096-d non-negative, text 384-d unit norm."""
    rng = np.random.default_rng([seed, 1 if modality == "image" else 2])
    noise = rng.standard_normal((n_items, STANDIN_DIMS[modality]), dtype=np.float32)
    if modality == "image":
        return np.maximum(noise, 0.0)  # CNN features after a ReLU are non-negative
    return noise / np.linalg.norm(noise, axis=1, keepdims=True)


def read_feature_record(folder: Path) -> list[str]:
    """Modalities that `features.json` (written by tasks.features) lists as stand-ins."""
    path = folder / "features.json"
    if not path.exists():
        return []
    try:
        standin = json.loads(path.read_text()).get("standin", [])
    except (json.JSONDecodeError, AttributeError) as err:
        raise DataError(f"{path}: expected a JSON object with a 'standin' list: {err}") from err
    if not isinstance(standin, list) or not set(standin) <= set(STANDIN_DIMS):
        raise DataError(f"{path}: key 'standin': expected a list of {sorted(STANDIN_DIMS)}, got {standin!r}")
    return standin


def load_dataset(folder: str | Path, standin: bool = False, seed: int = 0) -> Dataset:
    """Load a dataset folder.

    standin: fill each missing feature file with stand-in features (never done silently).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: dataset folder does not exist")
    inter_path = find_inter_file(folder)
    inter = read_interactions(inter_path)
    n_users, n_items = int(inter["userID"].max()) + 1, int(inter["itemID"].max()) + 1
    pairs = inter[["userID", "itemID"]].to_numpy()
    labels = inter["x_label"].to_numpy()
    dataset = Dataset(name=inter_path.stem, path=folder, n_users=n_users, n_items=n_items,
                      **{split: np.ascontiguousarray(pairs[labels == code]) for split, code in SPLITS.items()})
    recorded_standins = read_feature_record(folder)
    for modality in ("image", "text"):
        path = folder / f"{modality}_feat.npy"
        if path.exists():
            dataset.features[modality] = read_features(path, n_items)
            if modality in recorded_standins:  # written as stand-ins by tasks.features: keep saying so
                dataset.standin_features.append(modality)
        elif standin:
            dataset.features[modality] = standin_features(modality, n_items, seed)
            dataset.standin_features.append(modality)
    return dataset
