"""Datasets in the field's layout (the MMRec toolbox format).

A dataset folder holds one `<name>.inter` file (tab-separated, header `userID itemID x_label`,
optional `rating` / `timestamp` columns; x_label 0/1/2 = train/valid/test) and optionally
`image_feat.npy` [n_items, d_v] and `text_feat.npy` [n_items, d_t], row i = itemID i.

`load_dataset` refuses bad input with a `DataError` naming the file, the row or column and
what was expected. Stand-in features (seeded noise of the right shape) are only made when
asked for, and the returned `Dataset.standin_features` says so.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import reprlib
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from config.sections import IMAGE_DIM, TEXT_DIM

REQUIRED_COLUMNS = ("userID", "itemID", "x_label")
SPLITS = {"train": 0, "valid": 1, "test": 2}
STANDIN_DIMS = {"image": IMAGE_DIM, "text": TEXT_DIM}  # the real features' widths
PLAIN_INTEGER = r"[0-9]+"  # how an id or x_label is written: no sign, exponent, decimal point or spaces
MAX_ID = 2**31 - 1  # the largest user or item id: ids number embedding rows 0..n-1


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
    """Read and check an `.inter` file; returns the userID/itemID/x_label columns as int64.

    Every value of those columns is written as plain digits (no sign, exponent, decimal point or
    spaces: `1e2` is refused, not read as 100), an id is at most MAX_ID (2^31 - 1), and the ids are checked
    contiguous before anything of size max id + 1 is allocated.
    """
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file; expected a tab-separated header line "
                        f"{' '.join(REQUIRED_COLUMNS)} and one row per interaction") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a tab-separated table: {err}") from err
    if not isinstance(frame.index, pd.RangeIndex):  # pandas made the first field(s) of a long first row the index
        raise DataError(f"{path}: line {_line(path, 0)} (data row 0): {frame.index.nlevels + len(frame.columns)} "
                        f"fields, but the header names {len(frame.columns)} columns; expected at most one field "
                        f"per header column")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected header with {list(REQUIRED_COLUMNS)}, "
                        f"found {list(frame.columns)}")
    if frame.empty:
        raise DataError(f"{path}: header only, no interactions; expected one row per interaction "
                        f"({' '.join(REQUIRED_COLUMNS)}) below the header")
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
    """Plain digits only (what tasks/validate.py's INTEGER requires too), each value at most MAX_ID."""
    plain = column.str.fullmatch(PLAIN_INTEGER).eq(True)  # a missing field (NaN) is not plain
    if not plain.all():
        _fail_at(path, ~plain, name, "a plain-digit (0-9) non-negative integer", column)
    digits, limit = column.str.lstrip("0"), str(MAX_ID)  # compared as text: no overflow on 30 digits
    too_large = (digits.str.len() > len(limit)) | ((digits.str.len() == len(limit)) & (digits > limit))
    if too_large.any():
        _fail_at(path, too_large, name, f"an id below 2^31 = {MAX_ID + 1} (ids number rows 0..n-1)", column)
    return column.astype(np.int64)


def _fail_at(path: Path, bad: pd.Series, column: str, expected: str, shown: pd.Series) -> None:
    row = int(np.flatnonzero(bad.to_numpy())[0])
    raise DataError(f"{path}: line {_line(path, row)} (data row {row}), column '{column}': expected {expected}, "
                    f"got {shown.iloc[row]!r} ({int(bad.sum())} bad row(s) in all)")


def _check_contiguous(ids: pd.Series, path: Path, name: str) -> None:
    """Ids 0..max, each used: the number of distinct ids is max + 1 (found without an array of size max + 1,
    which an id of 2_000_000_000 in a small file would make 2 GB)."""
    distinct = np.unique(ids.to_numpy())
    top = int(distinct[-1])
    if len(distinct) != top + 1:
        bounds = np.concatenate(([-1], distinct))
        examples: list[int] = []
        for gap in np.flatnonzero(np.diff(bounds) > 1):
            examples += range(int(bounds[gap]) + 1, min(int(bounds[gap + 1]), int(bounds[gap]) + 11))
            if len(examples) >= 10:
                break
        line = _line(path, int(ids.to_numpy().argmax()))
        raise DataError(f"{path}: column '{name}': ids must be contiguous 0..{top} (the largest, {top}, is on "
                        f"line {line}), but {top + 1 - len(distinct)} are missing, e.g. {examples[:10]}")


def _line(path: Path, row: int) -> int:
    """The line of `path` that holds data row `row` (to word an error): lines end at \\n, \\r\\n or \\r, and a
    blank line (empty or spaces only) is no row, as pandas reads them."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = (number for number, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1) if line.strip(" "))
    return next(itertools.islice(lines, row + 1, None), row + 2)  # the first non-blank line is the header


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes of data the file holds after its header) of a `.npy` file, from its header
    alone: nothing the header claims is allocated."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(handle)
            data_bytes = os.fstat(handle.fileno()).st_size - handle.tell()
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as err:  # TokenError: open brackets
        raise DataError(f"{path}: not a readable .npy array: {err}") from err
    return shape, dtype, data_bytes


def read_features(path: Path, n_items: int) -> np.ndarray:
    """Load a feature matrix [n_items, d] as float32, refusing wrong shapes and NaN/inf.

    The header is checked first: a shape other than [n_items, d], a non-float dtype, or more bytes than
    the file holds is refused before anything is allocated."""
    shape, dtype, data_bytes = read_npy_header(path)
    if len(shape) != 2 or shape[0] != n_items or min(shape) < 0:
        raise DataError(f"{path}: expected shape [{n_items} items, d], got {list(shape)}")
    if not np.issubdtype(dtype, np.floating):
        raise DataError(f"{path}: expected a float array, got dtype {dtype}")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > data_bytes:
        raise DataError(f"{path}: the header claims shape {list(shape)} of {dtype} = {claimed} bytes, "
                        f"but the file holds {data_bytes} bytes after its header (truncated or corrupt)")
    try:
        matrix = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable .npy array: {err}") from err
    finite = np.isfinite(matrix)  # in the file's dtype: a value is named as the file holds it
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise DataError(f"{path}: row {row} (itemID {row}), column {col}: expected a finite value, "
                        f"got {matrix[row, col]} ({int((~finite).sum())} non-finite values in all)")
    with np.errstate(over="ignore"):  # a finite value past float32's range: refused below by name, not warned of
        single = matrix.astype(np.float32, copy=False)
    beyond = ~np.isfinite(single)
    if beyond.any():
        row, col = np.argwhere(beyond)[0]
        raise DataError(f"{path}: row {row} (itemID {row}), column {col}: expected a value within float32's range "
                        f"(|x| <= {np.finfo(np.float32).max:.6g}), got {matrix[row, col]} ({int(beyond.sum())} "
                        f"such values in all)")
    return single


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
        standin = json.loads(path.read_text(encoding="utf-8")).get("standin", [])
    except (ValueError, AttributeError, RecursionError) as err:  # ValueError: not UTF-8, not JSON
        raise DataError(f"{path}: expected a JSON object with a 'standin' list: {err}") from err
    if not isinstance(standin, list) or not all(isinstance(m, str) and m in STANDIN_DIMS for m in standin):
        raise DataError(f"{path}: key 'standin': expected a list of {sorted(STANDIN_DIMS)}, "
                        f"got {reprlib.repr(standin)}")  # reprlib: a bounded line, however large or deep
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
