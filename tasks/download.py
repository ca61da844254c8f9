"""Bring one dataset's raw files into `data/raw/<dataset>/` (the first stage of the pipeline).

Sources (the `source` field of `DownloadConfig`):

- `synthetic`  : the embedded benchmark of pipeline/synthetic.py (no network).
- `amazon2014` : McAuley's 2014 files `reviews_<Category>_5.json.gz`, `meta_<Category>.json.gz` and
                 `image_features_<Category>.b`, from the URLs in the config.
- `prepared`   : a folder, or an archive URL (.zip / .tar.gz / .tgz / .tar), already in the field's
                 layout (`<name>.inter`, `image_feat.npy`, `text_feat.npy`, optional id mappings).
- `local`      : a folder on disk with interactions only (e.g. ../shared/data/amazon/baby): the small
                 `.inter`, the id mappings and `item_keywords.tsv` (if any) are copied.
- `movielens`  : MovieLens ratings and movie texts as RecBole atomic files (`*.inter`, `*.item`;
                 pipeline/movielens.py): copied from the folder `path` (../shared/data/movielens-100k) when it
                 exists, else the GroupLens archive `urls.archive` is fetched (its md5 and/or sha256
                 checked), extracted and converted into the same two files.

HTTP downloads stream into `<file>.part` with a progress bar, resume a partial file with a Range
request, retry with exponential back-off, check sha256 when given (and record the computed hash in
`<dest>/checksums.json` in any case), and only then move the file to its final name.

    python -m tasks.download --dataset baby --config-json '{"source": "local", "path": "../shared/data/amazon/baby"}'
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import os
import shutil
import tarfile
import time
import zipfile
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from pydantic import ValidationError
from tqdm import tqdm

from config.params import dataset_config, load_params
from config.sections import AMAZON_FILES, DownloadConfig, SyntheticConfig
from config.strict import ParamsError, describe
from models.data import DataError, find_inter_file
from pipeline.errors import DownloadError, run_command
from pipeline.io import local_path, setup_logging, write_text

log = logging.getLogger(__name__)

PREPARED_FILES = ("image_feat.npy", "text_feat.npy", "u_id_mapping.csv", "i_id_mapping.csv")
LOCAL_FILES = ("u_id_mapping.csv", "i_id_mapping.csv", "item_keywords.tsv")
RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}
CHUNK = 1 << 20


class _Dropped(ConnectionError):
    """The server closed the connection before the announced length arrived."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def record_checksum(folder: Path, name: str, url: str, digest: str, verified: bool) -> None:
    """Add one file's hash to `<folder>/checksums.json` (name -> url, sha256, verified against config)."""
    path = folder / "checksums.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    record[name] = {"url": url, "sha256": digest, "verified": verified}
    write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def _stream_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    """One attempt: append to `part` from its current size (Range request), to the end of the body."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with urlopen(Request(url, headers=headers), timeout=timeout) as response:
        if offset and response.status != 206:  # the server ignored the Range header: start over
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as out, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[:-5],
                     disable=not progress, leave=False) as bar:
            while block := response.read(CHUNK):
                out.write(block)
                bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Dropped(f"connection dropped after {size} of {total} bytes")


def _download_with_retries(url: str, part: Path, retries: int, backoff: float, timeout: float,
                           progress: bool) -> None:
    """Repeat `_stream_once` (each resuming) until complete; a 4xx other than 408/429 fails at once."""
    for attempt in range(retries + 1):
        try:
            _stream_once(url, part, timeout, progress)
            return
        except HTTPError as err:
            if err.code == 416:  # the range is past the end: what is kept is not a prefix, restart
                part.unlink(missing_ok=True)
            elif err.code not in RETRYABLE_HTTP:
                raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
            last = f"HTTP {err.code} {err.reason}"
        except _Dropped as err:
            last = str(err)
        except (URLError, http.client.HTTPException, OSError) as err:
            last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
        if attempt < retries:
            delay = backoff * 2 ** attempt
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.1f s", url, attempt + 1, retries + 1, last, delay)
            time.sleep(delay)
    kept = part.stat().st_size if part.exists() else 0
    resume = f"; {kept} bytes kept in {part} for a later resume" if kept else ""
    raise DownloadError(f"{url}: failed after {retries} retries ({retries + 1} attempts); last error: {last}{resume}")


def fetch(url: str, dest: Path, sha256: str | None = None, *, retries: int = 5, backoff: float = 1.0,
          timeout: float = 60.0, progress: bool = True) -> str:
    """Download `url` to `dest` (skipped if already there and valid); returns its sha256.

    The file appears under its final name only when complete and verified; the hash is recorded in
    `dest.parent/checksums.json`.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = sha256.lower() if sha256 else None
    if dest.exists():
        digest = sha256_file(dest)
        if expected in (None, digest):
            log.info("%s: already present, sha256 %s", dest, digest)
            record_checksum(dest.parent, dest.name, url, digest, verified=expected is not None)
            return digest
        log.warning("%s: present but sha256 %s != expected %s; downloading again", dest, digest, expected)
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    _download_with_retries(url, part, retries, backoff, timeout, progress)
    digest = sha256_file(part)
    if expected and digest != expected:
        part.unlink()  # resuming a corrupt file would only reproduce the mismatch
        raise DownloadError(f"{url}: checksum mismatch: expected sha256 {expected}, got {digest}; "
                            f"the file was removed")
    os.replace(part, dest)
    record_checksum(dest.parent, dest.name, url, digest, verified=expected is not None)
    log.info("%s: %d bytes, sha256 %s%s", dest, dest.stat().st_size, digest, " (verified)" * bool(expected))
    return digest


def _fetch_options(cfg: DownloadConfig, progress: bool) -> dict:
    return {"retries": cfg.retries, "backoff": cfg.backoff, "timeout": cfg.timeout, "progress": progress}


def download_amazon2014(cfg: DownloadConfig, dest: Path, progress: bool = True) -> list[Path]:
    """Fetch the category's review, metadata and image-feature files into `dest`."""
    paths = []
    for kind, url in cfg.urls.items():
        path = dest / AMAZON_FILES[kind].format(category=cfg.category)
        fetch(url, path, cfg.sha256.get(path.name), **_fetch_options(cfg, progress))
        paths.append(path)
    missing = sorted(set(AMAZON_FILES) - set(cfg.urls))
    if missing:
        log.warning("amazon2014 %s: no URL for %s; the features stage will need another source",
                    cfg.category, missing)
    return paths


def url_file_name(url: str) -> str:
    """The file name a URL's path ends in: the name a download is saved (and checksummed) under."""
    return Path(urlparse(url).path).name


def _is_url(text: str) -> bool:
    return urlparse(text).scheme in ("http", "https", "file")


def extract_archive(archive: Path, into: Path) -> None:
    """Unpack a .zip or tar archive, refusing members that would land outside `into`."""
    into.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle:
            root = into.resolve()
            for member in handle.namelist():
                if not (into / member).resolve().is_relative_to(root):
                    raise DataError(f"{archive}: member {member!r} would be written outside {into}")
            handle.extractall(into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as handle:
            handle.extractall(into, filter="data")  # "data" refuses absolute paths, .. and devices
    else:
        raise DataError(f"{archive}: not a .zip or tar archive")


def _copy_files(src: Path, dest: Path, required: list[Path], optional: tuple[str, ...]) -> list[str]:
    """Copy `required` and whatever of `optional` exists in `src` into a fresh `dest` (temp + rename)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = [p.name for p in required] + [n for n in optional if (src / n).is_file()]
    for name in names:
        shutil.copyfile(src / name, tmp / name)  # contents only: not the source's read-only mode
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return names


def copy_local(src: Path, dest: Path) -> list[str]:
    """`local`: copy the `.inter` file, id mappings and item keywords of an interactions-only folder."""
    if not src.is_dir():
        raise DataError(f"{src}: local dataset folder does not exist")
    names = _copy_files(src, dest, [find_inter_file(src)], LOCAL_FILES)
    log.info("copied %s from %s to %s (interactions only: feature files come from the features stage)",
             names, src, dest)
    return names


def download_prepared(cfg: DownloadConfig, dest: Path, progress: bool = True) -> list[str]:
    """`prepared`: a folder or an archive URL in the field's layout; copies `.inter` + features."""
    if not _is_url(cfg.path):
        src = local_path(cfg.path)
    else:
        staging = dest.with_name(dest.name + ".download")
        archive = staging / url_file_name(cfg.path)
        fetch(cfg.path, archive, cfg.sha256.get(archive.name), **_fetch_options(cfg, progress))
        extract_archive(archive, staging / "extracted")
        inter = sorted((staging / "extracted").rglob("*.inter"))
        if len(inter) != 1:
            raise DataError(f"{cfg.path}: expected exactly one *.inter file in the archive, "
                            f"found {[str(p.relative_to(staging)) for p in inter] or 'none'}")
        src = inter[0].parent
    if not src.is_dir():
        raise DataError(f"{src}: prepared dataset folder does not exist")
    names = _copy_files(src, dest, [find_inter_file(src)], PREPARED_FILES)
    if _is_url(cfg.path):
        shutil.copyfile(staging / "checksums.json", dest / "checksums.json")
        shutil.rmtree(staging)
    missing = [n for n in ("image_feat.npy", "text_feat.npy") if n not in names]
    if missing:
        log.warning("%s: no %s; training will need them or explicit stand-ins", cfg.path, missing)
    return names


def check_md5(path: Path, expected: str | None, url: str) -> None:
    """The file's md5 against `expected` (if any); a mismatch removes the file and names both hashes."""
    if not expected:
        return
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    if digest.hexdigest() != expected.lower():
        path.unlink()
        raise DownloadError(f"{url}: checksum mismatch: expected md5 {expected.lower()}, got {digest.hexdigest()}; "
                            f"the file was removed")


def download_movielens(cfg: DownloadConfig, dest: Path, progress: bool = True) -> list[str]:
    """`movielens`: the RecBole atomic files of the folder `path` if it exists, else the GroupLens archive
    (`urls.archive`: fetched, sha256 / md5 checked, extracted, converted by pipeline.movielens)."""
    from pipeline.movielens import find_atomic_file, grouplens_to_atomic, read_items, read_ratings

    if cfg.path and local_path(cfg.path).is_dir():
        src = local_path(cfg.path)
        files = [find_atomic_file(src, "inter"), find_atomic_file(src, "item")]
        read_ratings(files[0])  # bad files are refused here, naming the file, line and column
        read_items(files[1])
        names = _copy_files(src, dest, files, ())
        log.info("copied %s from %s to %s", names, src, dest)
        return names
    if "archive" not in cfg.urls:
        raise DataError(f"{cfg.path}: MovieLens folder does not exist, and no `urls.archive` to download instead")
    if cfg.path:
        log.warning("%s: no such folder; downloading %s instead", cfg.path, cfg.urls["archive"])
    url = cfg.urls["archive"]
    staging = dest.with_name(dest.name + ".download")
    archive = staging / url_file_name(url)
    fetch(url, archive, cfg.sha256.get(archive.name), **_fetch_options(cfg, progress))
    check_md5(archive, cfg.md5.get(archive.name), url)
    extract_archive(archive, staging / "extracted")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    names = grouplens_to_atomic(staging / "extracted", tmp)
    shutil.copyfile(staging / "checksums.json", tmp / "checksums.json")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    shutil.rmtree(staging)
    return names


def fetched_names(cfg: DownloadConfig) -> list[str]:
    """The names of the files this source fetches over the network: what a `sha256:` entry can protect."""
    if cfg.source == "amazon2014":
        return [AMAZON_FILES[kind].format(category=cfg.category) for kind in cfg.urls]
    if cfg.source == "prepared" and _is_url(cfg.path):
        return [url_file_name(cfg.path)]
    if cfg.source == "movielens" and "archive" in cfg.urls:  # the fallback when the folder is absent
        return [url_file_name(cfg.urls["archive"])]
    return []


def check_checksum_names(name: str, cfg: DownloadConfig) -> None:
    """A `sha256:` / `md5:` entry whose file name matches no fetched file would protect nothing, silently:
    an error. (md5 is checked for the MovieLens archive only.)"""
    fetched = fetched_names(cfg)
    allowed = {"sha256": fetched, "md5": fetched if cfg.source == "movielens" else []}
    for key, names in allowed.items():
        unmatched = sorted(set(getattr(cfg, key)) - set(names))
        if unmatched:
            raise DataError(f"params.yaml datasets.{name}.download.{key}: {unmatched} match no file this "
                            f"{cfg.source!r} source can check (it fetches {fetched or 'nothing over the network'}); "
                            "fix the file name or remove the entry")


def download(name: str, cfg: DownloadConfig, root: Path = Path("data/raw"), seed: int = 2024,
             synthetic=None, progress: bool = True) -> Path:
    """Bring dataset `name` into `root/name` from `cfg.source`; returns that folder.

    synthetic: a config.sections.SyntheticConfig for the `synthetic` source (default values if None).
    """
    dest = Path(root) / name
    check_checksum_names(name, cfg)
    if cfg.source == "synthetic":
        from pipeline.synthetic import generate, write_dataset
        write_dataset(dest, *generate(synthetic or SyntheticConfig(), seed))
    elif cfg.source == "amazon2014":
        download_amazon2014(cfg, dest, progress)
    elif cfg.source == "prepared":
        download_prepared(cfg, dest, progress)
    elif cfg.source == "movielens":
        download_movielens(cfg, dest, progress)
    else:
        copy_local(local_path(cfg.path), dest)
    log.info("%s (%s) ready in %s", name, cfg.source, dest)
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="folder name under --root")
    parser.add_argument("--config-json", help="DownloadConfig fields as a JSON object "
                        "(default: `datasets.<dataset>.download` of --params)")
    parser.add_argument("--root", type=Path, default=Path("data/raw"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="source synthetic: read `seed` and the `synthetic` section from here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    setup_logging()

    params = load_params(args.params)
    cfg = config_from_json(args.config_json) if args.config_json else dataset_config(params, args.dataset).download
    # DataError (exit 3) and DownloadError (exit 4) end the command through pipeline.errors.run_command
    download(args.dataset, cfg, args.root, params.seed, params.synthetic, progress=not args.no_progress)


def config_from_json(text: str) -> DownloadConfig:
    """--config-json: a DownloadConfig as a JSON object; anything else is a ParamsError naming the option."""
    try:
        return DownloadConfig(**json.loads(text))
    except (json.JSONDecodeError, TypeError, ValidationError) as err:
        fields = "; ".join(map(describe, err.errors())) if isinstance(err, ValidationError) else err
        raise ParamsError(f"--config-json: expected a JSON object of download fields: {fields}") from None


if __name__ == "__main__":
    run_command(main)
