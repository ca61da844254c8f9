"""MovieLens (GroupLens) files for the pipeline: RecBole atomic files in, checked, and item text out.

The dataset's raw folder (`data/raw/<name>/`, written by tasks.download with source `movielens`)
holds two RecBole atomic files (tab-separated, typed header `field:type`), as
../shared/data/movielens-100k/ ships them:

- `<stem>.inter`: `user_id:token item_id:token rating:float timestamp:float` (raw ids, every rating);
- `<stem>.item` : `item_id:token movie_title:token_seq release_year:token class:token_seq`
                  (class = space-separated genres).

With a network the download stage fetches the official GroupLens archive (`ml-100k.zip`: `u.data`,
`u.item`) instead and converts it here into the same two files (`grouplens_to_atomic`), so the
filter and features stages read one format. Bad or missing files are DataErrors naming the file,
the line and the column, and what was expected.

- tasks.filter reads the ratings (read_ratings), keeps every rating as an implicit interaction,
  and applies its own k-core, contiguous ids and per-user split.
- tasks.features encodes item_text(): "title (year): genre, genre" with all-MiniLM-L6-v2.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from models.data import DataError

# field -> (type in the header, what a value must be)
INTER_FIELDS = {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"}
ITEM_FIELDS = {"item_id": "token", "movie_title": "token_seq", "release_year": "token", "class": "token_seq"}
# u.item's 19 genre flags, in u.genre's order (GroupLens README)
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
YEAR = re.compile(r"^\d{4}$")
TITLE_WITH_YEAR = re.compile(r"^(?P<title>.*\S)\s+\((?P<year>\d{4})\)\s*$")


def find_atomic_file(folder: Path, suffix: str) -> Path:
    """The single `*.<suffix>` atomic file of a folder (suffix `inter` or `item`)."""
    found = sorted(Path(folder).glob(f"*.{suffix}"))
    if len(found) != 1:
        raise DataError(f"{folder}: expected exactly one RecBole atomic file *.{suffix} "
                        f"({'ratings' if suffix == 'inter' else 'movie titles, years and genres'}), "
                        f"found {[p.name for p in found] or 'none'}")
    return found[0]


def read_atomic(path: Path, fields: dict[str, str]) -> pd.DataFrame:
    """A RecBole atomic file as strings, columns renamed to the bare field names (header `field:type`).

    Every field of `fields` must be in the header with that type; other columns are kept as they are."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing")
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3, encoding="utf-8")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: not a tab-separated RecBole atomic file with a header: {err}") from None
    header = {}
    for column in frame.columns:
        name, sep, kind = column.partition(":")
        header[name] = kind if sep else None
    expected = " ".join(f"{f}:{t}" for f, t in fields.items())
    for name, kind in fields.items():
        if name not in header:
            raise DataError(f"{path}: line 1 (header): no column '{name}:{kind}'; expected the header "
                            f"`{expected}` (tab-separated), got {list(frame.columns)}")
        if header[name] != kind:
            raise DataError(f"{path}: line 1 (header), column '{name}': expected type '{kind}' "
                            f"(`{name}:{kind}`), got {header[name]!r}")
    frame.columns = list(header)
    return frame


def _fail_at(path: Path, bad: np.ndarray, column: str, expected: str, shown: pd.Series) -> None:
    row = int(np.flatnonzero(bad)[0])
    raise DataError(f"{path}: line {row + 2} (data row {row}), column '{column}': expected {expected}, "
                    f"got {shown.iloc[row]!r} ({int(bad.sum())} bad row(s) in all)")


def _numbers(frame: pd.DataFrame, column: str, path: Path, integer: bool) -> np.ndarray:
    values = pd.to_numeric(frame[column].str.strip(), errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | ((values % 1 != 0) if integer else False)
    if bad.any():
        _fail_at(path, bad, column, "an integer (seconds)" if integer else "a number", frame[column])
    return values


def read_ratings(path: Path) -> pd.DataFrame:
    """Columns user, item (raw tokens), rating (float), timestamp (int64), one row per rating, file order."""
    frame = read_atomic(path, INTER_FIELDS)
    for column in ("user_id", "item_id"):
        empty = (frame[column].str.strip() == "").to_numpy()
        if empty.any():
            _fail_at(path, empty, column, "a non-empty id token", frame[column])
    if frame.empty:
        raise DataError(f"{path}: no ratings (only a header)")
    return pd.DataFrame({"user": frame["user_id"].str.strip(), "item": frame["item_id"].str.strip(),
                         "rating": _numbers(frame, "rating", path, integer=False),
                         "timestamp": _numbers(frame, "timestamp", path, integer=True).astype(np.int64)})


def read_items(path: Path) -> pd.DataFrame:
    """Columns item_id, movie_title, release_year, class (strings), checked: ids non-empty and unique."""
    frame = read_atomic(path, ITEM_FIELDS)
    ids = frame["item_id"].str.strip()
    for bad, expected in (((ids == "").to_numpy(), "a non-empty id token"),
                          (ids.duplicated().to_numpy(), "each item_id once")):
        if bad.any():
            _fail_at(path, bad, "item_id", expected, frame["item_id"])
    return frame.assign(item_id=ids)


def item_text(title: str, year: str, genres: str) -> str:
    """"title (year): genre, genre": a year that is not 4 digits, and empty parts, are left out."""
    text = title.strip()
    if YEAR.match(year.strip()):
        text += f" ({year.strip()})"
    genres = ", ".join(genres.split())
    return f"{text}: {genres}" if genres else text


def item_texts(path: Path, item_ids: list[str]) -> list[str]:
    """item_text of each raw item id, in the given order (the dataset's itemID order)."""
    frame = read_items(path).set_index("item_id")
    missing = [i for i in item_ids if i not in frame.index]
    if missing:
        raise DataError(f"{path}: no row for {len(missing)} of the dataset's {len(item_ids)} items, "
                        f"e.g. item_id {missing[:5]}")
    rows = frame.loc[item_ids]
    return [item_text(t, y, g) for t, y, g in zip(rows["movie_title"], rows["release_year"], rows["class"])]


# -- the GroupLens archive (with a network) --------------------------------------------------------
def _grouplens_file(folder: Path, name: str) -> Path:
    found = sorted(Path(folder).rglob(name))
    if len(found) != 1:
        raise DataError(f"{folder}: expected exactly one {name} in the GroupLens archive, "
                        f"found {[str(p.relative_to(folder)) for p in found] or 'none'}")
    return found[0]


def grouplens_to_atomic(extracted: Path, dest: Path, stem: str = "ml-100k") -> list[str]:
    """u.data + u.item of an extracted GroupLens ml-100k archive -> `<stem>.inter` and `<stem>.item`
    (RecBole atomic files, as ../shared/data/movielens-100k holds them) in `dest`; returns their names."""
    data, item = _grouplens_file(extracted, "u.data"), _grouplens_file(extracted, "u.item")
    ratings = pd.read_csv(data, sep="\t", header=None, dtype=str, keep_default_na=False)
    if ratings.shape[1] != 4:
        raise DataError(f"{data}: expected 4 tab-separated columns (user item rating timestamp), "
                        f"got {ratings.shape[1]} on line 1")
    # u.item is latin-1, pipe-separated: id | title (year) | release date | video date | url | 19 flags
    items = pd.read_csv(item, sep="|", header=None, dtype=str, keep_default_na=False, encoding="latin-1",
                        quoting=3)
    if items.shape[1] != 5 + len(GENRES):
        raise DataError(f"{item}: expected {5 + len(GENRES)} '|'-separated columns (id, title, release date, "
                        f"video date, url, {len(GENRES)} genre flags), got {items.shape[1]}")
    rows = []
    for lineno, row in enumerate(items.itertuples(index=False), start=1):
        flags = row[5:]
        if any(f not in ("0", "1") for f in flags):
            raise DataError(f"{item}: line {lineno}: genre flags must be 0 or 1, got {list(flags)}")
        match = TITLE_WITH_YEAR.match(row[1])
        title, year = (match["title"], match["year"]) if match else (row[1].strip(), row[2].strip()[-4:])
        rows.append((row[0].strip(), title, year, " ".join(g for g, f in zip(GENRES, flags) if f == "1")))
    Path(dest).mkdir(parents=True, exist_ok=True)
    for suffix, fields, table in (("inter", INTER_FIELDS, ratings.itertuples(index=False)),
                                  ("item", ITEM_FIELDS, rows)):
        lines = ["\t".join(f"{f}:{t}" for f, t in fields.items())] + ["\t".join(map(str, r)) for r in table]
        (Path(dest) / f"{stem}.{suffix}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [f"{stem}.inter", f"{stem}.item"]
