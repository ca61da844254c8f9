"""Amazon 2014 reviews -> iterative k-core -> contiguous ids -> per-user split -> `<name>.inter`.

Reads `reviews_<Category>_5.json.gz` (one JSON object per line with reviewerID, asin, overall,
unixReviewTime) from the raw folder, keeps each (user, item) pair once (its earliest review), removes
users and items with fewer than k interactions until none is left (one pass is not enough: removing
an item can push a user below k), numbers users and items 0..n-1 in order of first appearance, splits
each user's interactions with the protocol's seeded recipe (pipeline.synthetic.split_per_user) and writes
`<name>.inter` (userID itemID x_label rating timestamp), `u_id_mapping.csv` and `i_id_mapping.csv`
(tab-separated, as ../shared/data/amazon).

    python -m tasks.filter --dataset baby2014 [--raw data/raw/baby2014] [--out data/prepared/baby2014] [--stats F]

MovieLens ratings (source `movielens`: RecBole atomic `*.inter` in the raw folder, pipeline/movielens.py)
go through the same steps: every rating is an implicit interaction (whatever its value), then the
k-core, the ids and the split above (`filter_ratings`); `i_id_mapping.csv` keeps the field's header
`asin itemID`, its `asin` column holding MovieLens's raw item_id.

Sources already split (synthetic, prepared, local) are checked and copied unchanged.
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from config.params import dataset_config, load_params
from config.sections import FilterConfig
from models.data import DataError
from pipeline.errors import run_command
from pipeline.io import setup_logging
from pipeline.split import split_per_user

log = logging.getLogger(__name__)

REVIEW_FIELDS = {"reviewerID": "user", "asin": "item", "overall": "rating", "unixReviewTime": "timestamp"}
# spec, section 4: (users, items, interactions) of the 5-core datasets
EXPECTED_COUNTS = {"Baby": (19445, 7050, 160792), "Sports_and_Outdoors": (35598, 18357, 296337),
                   "Clothing_Shoes_and_Jewelry": (39387, 23033, 278677)}


def find_reviews_file(raw: Path) -> Path:
    """The single `reviews_<Category>_5.json.gz` of a raw folder."""
    found = sorted(Path(raw).glob("reviews_*_5.json.gz"))
    if len(found) != 1:
        raise DataError(f"{raw}: expected exactly one reviews_<Category>_5.json.gz, "
                        f"found {[p.name for p in found] or 'none'} (run tasks.download with source amazon2014)")
    return found[0]


def _review_row(line: bytes, path: Path, lineno: int) -> tuple:
    try:
        record = json.loads(line)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise DataError(f"{path}: line {lineno}: not a JSON object: {err}") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in REVIEW_FIELDS if key not in record]
    if missing:
        raise DataError(f"{path}: line {lineno}: missing field(s) {missing}; expected {list(REVIEW_FIELDS)}")
    return tuple(record[key] for key in REVIEW_FIELDS)


def read_reviews(path: Path) -> pd.DataFrame:
    """Columns user, item (str), rating (float), timestamp (int), in file order."""
    rows = []
    try:
        with gzip.open(path, "rb") as handle:
            for lineno, line in enumerate(handle, start=1):
                if line.strip():
                    rows.append(_review_row(line, path, lineno))
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a readable gzip file (corrupt or truncated): {err}") from None
    frame = pd.DataFrame(rows, columns=list(REVIEW_FIELDS.values()))
    try:
        return frame.astype({"user": str, "item": str, "rating": float, "timestamp": np.int64})
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: a rating or timestamp is not a number: {err}") from None


def drop_duplicates(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep each (user, item) pair once, its earliest review; file order is kept."""
    earliest = frame.sort_values("timestamp", kind="stable").drop_duplicates(["user", "item"], keep="first")
    return earliest.sort_index()


def k_core(frame: pd.DataFrame, k: int) -> tuple[pd.DataFrame, int]:
    """Repeat dropping users and items with < k rows until every one has >= k; returns (rows, passes).

    The result may be empty; the caller decides what that means.
    """
    passes = 0
    while True:
        passes += 1
        user_counts = frame["user"].map(frame["user"].value_counts())
        item_counts = frame["item"].map(frame["item"].value_counts())
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            return frame, passes
        frame = frame[keep]


def reindex(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(interactions with userID/itemID, user mapping, item mapping); ids in order of first appearance."""
    user_ids, users = pd.factorize(frame["user"], sort=False)
    item_ids, items = pd.factorize(frame["item"], sort=False)
    inter = pd.DataFrame({"userID": user_ids.astype(np.int64), "itemID": item_ids.astype(np.int64),
                          "rating": frame["rating"].to_numpy(), "timestamp": frame["timestamp"].to_numpy()})
    user_map = pd.DataFrame({"user_id": users, "userID": np.arange(len(users))})
    item_map = pd.DataFrame({"asin": items, "itemID": np.arange(len(items))})
    return inter, user_map, item_map


def split(inter: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Rows grouped by user (then time, item) with x_label from the seeded per-user split."""
    inter = inter.sort_values(["userID", "timestamp", "itemID"], kind="stable").reset_index(drop=True)
    labels = split_per_user(inter["userID"].to_numpy(), np.random.default_rng(seed))
    inter.insert(2, "x_label", labels)
    return inter


def write_outputs(out: Path, inter: pd.DataFrame, user_map: pd.DataFrame, item_map: pd.DataFrame) -> None:
    """Write into a temporary folder, then move each file into `out` (other stages' files there survive)."""
    tmp = out.with_name(out.name + ".filter-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    inter.to_csv(tmp / f"{out.name}.inter", sep="\t", index=False)
    user_map.to_csv(tmp / "u_id_mapping.csv", sep="\t", index=False)
    item_map.to_csv(tmp / "i_id_mapping.csv", sep="\t", index=False)
    out.mkdir(parents=True, exist_ok=True)
    for path in tmp.iterdir():
        os.replace(path, out / path.name)
    tmp.rmdir()


def _check_expected(path: Path, stats: dict) -> None:
    match = re.fullmatch(r"reviews_(.+)_5\.json\.gz", path.name)
    expected = EXPECTED_COUNTS.get(match.group(1)) if match else None
    found = (stats["users"], stats["items"], stats["interactions"])
    if expected and found != expected:
        log.warning("%s: got %s users/items/interactions, the spec's 5-core counts are %s", path.name, found, expected)
    elif expected:
        log.info("%s: counts match the spec's 5-core counts %s", path.name, expected)


def filter_reviews(raw: Path, out: Path, cfg: FilterConfig | None = None, seed: int = 2024) -> dict:
    """The whole stage; returns counts (users, items, interactions, train/valid/test, ...)."""
    path = find_reviews_file(raw)
    stats = core_split_write(read_reviews(path), path, out, cfg or FilterConfig(), seed)
    _check_expected(path, stats)
    return stats


def filter_ratings(raw: Path, out: Path, cfg: FilterConfig | None = None, seed: int = 2024) -> dict:
    """MovieLens (pipeline/movielens.py): every rating of the raw folder's atomic `*.inter` an implicit
    interaction, then the same k-core, ids and split as filter_reviews; returns the counts."""
    from pipeline.movielens import find_atomic_file, read_ratings

    path = find_atomic_file(raw, "inter")
    return core_split_write(read_ratings(path), path, out, cfg or FilterConfig(), seed)


def core_split_write(reviews: pd.DataFrame, path: Path, out: Path, cfg: FilterConfig, seed: int) -> dict:
    """Rows (user, item, rating, timestamp) -> one row per pair -> k-core -> ids -> split -> files; counts."""
    unique = drop_duplicates(reviews)
    kept, passes = k_core(unique, cfg.k_core)
    if kept.empty:
        raise DataError(f"{path}: the {cfg.k_core}-core filter removed every interaction "
                        f"({len(unique)} reviews of {unique['user'].nunique()} users and "
                        f"{unique['item'].nunique()} items before filtering)")
    inter, user_map, item_map = reindex(kept)
    inter = split(inter, seed)
    write_outputs(Path(out), inter, user_map, item_map)
    sizes = np.bincount(inter["x_label"], minlength=3)
    stats = {"users": len(user_map), "items": len(item_map), "interactions": len(inter),
             "train": int(sizes[0]), "valid": int(sizes[1]), "test": int(sizes[2]),
             "reviews_read": len(reviews), "duplicates_dropped": len(reviews) - len(unique),
             "k_core": cfg.k_core, "k_core_passes": passes}
    log.info("%s -> %s: %s", path.name, out, stats)
    return stats


def copy_split(raw: Path, out: Path) -> dict:
    """Sources already split (synthetic, prepared, local): check and copy the `.inter` as `<out name>.inter`,
    with the id mappings (identity mappings where the source has none)."""
    from models.data import find_inter_file, read_interactions

    path = find_inter_file(Path(raw))
    inter = read_interactions(path)  # refuses bad input with file, row and column
    frame = pd.read_csv(path, sep="\t")
    maps = {}
    for name, key, column in (("u_id_mapping.csv", "userID", "user_id"), ("i_id_mapping.csv", "itemID", "asin")):
        source = Path(raw) / name
        n = int(inter[key].max()) + 1
        maps[name] = pd.read_csv(source, sep="\t", dtype=str) if source.exists() else \
            pd.DataFrame({column: [f"{key}_{i}" for i in range(n)], key: np.arange(n)})
    write_outputs(Path(out), frame, maps["u_id_mapping.csv"], maps["i_id_mapping.csv"])
    sizes = np.bincount(inter["x_label"], minlength=3)
    return {"users": int(inter["userID"].max()) + 1, "items": int(inter["itemID"].max()) + 1,
            "interactions": len(inter), "train": int(sizes[0]), "valid": int(sizes[1]), "test": int(sizes[2]),
            "source": str(path)}


def main(argv: list[str] | None = None) -> None:

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a name under `datasets:` in params.yaml")
    parser.add_argument("--raw", type=Path, help="raw folder (default data/raw/<dataset>)")
    parser.add_argument("--out", type=Path, help="dataset folder (default data/prepared/<dataset>)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--stats", type=Path, help="also write the counts to this JSON file")
    args = parser.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    raw, out = args.raw or Path("data/raw") / args.dataset, args.out or Path("data/prepared") / args.dataset
    source = dataset_config(params, args.dataset).download.source  # ParamsError, DataError: run_command
    if source == "amazon2014":
        stats = filter_reviews(raw, out, params.filter, params.seed)
    elif source == "movielens":
        stats = filter_ratings(raw, out, params.filter, params.seed)
    else:
        stats = copy_split(raw, out)
    log.info("%s: %s", out, stats)
    if args.stats:
        args.stats.write_text(json.dumps(stats, indent=2) + "\n")


if __name__ == "__main__":
    run_command(main)
