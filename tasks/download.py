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

HTTP downloads (`fetch`) stream into `<file>.part` with a progress bar, resume a partial file with a
Range request (with If-Range, so a file changed on the server starts over; a `<file>.part.json` beside
it names the URL it belongs to), retry with exponential back-off, and move the file to its final name
only once its body is known to be complete:

- a body the server announced the length of (Content-Length, or Content-Range's total on a resume)
  is complete when that many bytes arrived; fewer is a dropped connection, resumed;
- a body of unannounced length is read to its format's own end (`verify_end`): gzip decompressed to
  its end-of-stream marker (CRC and size checked), zip's central directory read and every member's CRC
  checked, tar(.gz) read member by member to its end-of-archive block. A body that stops short is
  resumed like a dropped connection; any other format is refused with a DownloadError unless a sha256
  (or md5) is configured for it, since nothing else can tell a cut body from a whole one;
- a configured sha256 / md5 is then checked (a mismatch removes the file).

`<folder>/checksums.json` records every finished file: its URL, sha256, whether it matched a
configured checksum (`verified`) and how it was found complete (`complete`). A file already at its
final name counts as "already present" only if it matches its configured checksum, or its record
says it was complete when it arrived (same URL and sha256), or its format's end checks out now;
anything else is downloaded again.

Where partial downloads wait: `data/partial/<dataset>/` (`--partial`), beside the stage's output
`data/raw/<dataset>/` and not inside it. DVC deletes a stage's outputs before running it again, so
a `.part` file inside `data/raw/<dataset>/` would never survive to be resumed by the next `dvc repro`;
`data/partial/` is no output of any stage (listed in .dvcignore, ignored by git under `/data/*`),
like the training checkpoints under `checkpoints/`, so DVC leaves it alone. The alternative,
`persist: true` on the output, would keep the whole old output folder across runs, including files
of an earlier configuration that the new run no longer writes: stale data DVC would then cache as the
new output; it also makes DVC skip its run cache for the stage, which `dvc exp run --temp` relies on to
restore finished stages instead of re-running them.

Every file of a network source (the partial ones, the finished ones, and an archive being extracted)
waits in `data/partial/<dataset>/` until the whole dataset is there; only then are the verified files
moved into the output folder (through `<dataset>.tmp` and a rename) and the partial folder removed.
So a kill while the third of three files downloads keeps the first two as well. (`dvc exp run --temp`
works in a copy of the repository: its partial folder is that copy's.)

    python -m tasks.download --dataset baby --config-json '{"source": "local", "path": "../shared/data/amazon/baby"}'
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tarfile
import time
import zipfile
import zlib
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
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive's end record


class Truncated(ConnectionError):
    """The body stopped short: fewer bytes than announced, or a file that ends before its format's end.
    What arrived is a prefix of the file: kept, and the next attempt resumes from its end."""


class Corrupt(ValueError):
    """What arrived is not a prefix of a valid file (damaged data, a server that answered another range):
    removed, and the next attempt starts over."""


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file, read in blocks (hashlib.file_digest)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def read_record(folder: Path) -> dict:
    """`<folder>/checksums.json` (name -> url, sha256, verified, complete); {} if absent or unreadable."""
    try:
        record = json.loads((folder / "checksums.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_record(folder: Path, record: dict) -> None:
    write_text(folder / "checksums.json", json.dumps(record, indent=2, sort_keys=True) + "\n")


def record_checksum(folder: Path, name: str, url: str, digest: str, verified: bool, complete: str) -> None:
    """Add one file's entry to `<folder>/checksums.json`: url, sha256, verified (matched a configured
    checksum), complete (how the body was found whole: sha256, md5, content-length, gzip, zip, tar, tar.gz)."""
    record = read_record(folder)
    record[name] = {"url": url, "sha256": digest, "verified": verified, "complete": complete}
    write_record(folder, record)


# -- a body's own end ---------------------------------------------------------------------------------
def _read_gzip(path: Path) -> None:
    try:
        with gzip.open(path) as stream:
            while stream.read(CHUNK):
                pass
    except EOFError as err:  # "Compressed file ended before the end-of-stream marker was reached"
        raise Truncated(f"{path.name} ends before its gzip end-of-stream marker ({err})") from None
    except (OSError, zlib.error) as err:  # gzip.BadGzipFile (a CRC or size mismatch) is an OSError
        raise Corrupt(f"{path.name} is not a valid gzip file ({err})") from None


def _read_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every member, checking its CRC
    except zipfile.BadZipFile as err:  # the central directory, at the very end, is missing
        raise Truncated(f"{path.name} ends before its zip central directory ({err})") from None
    except (OSError, EOFError, zlib.error) as err:
        raise Corrupt(f"{path.name} is not a valid zip file ({err})") from None
    if bad is not None:
        raise Corrupt(f"{path.name}: zip member {bad!r} fails its CRC check")


def _read_tar(path: Path) -> None:
    """Every member header in turn, then the end-of-archive block (a zero block) right after the last
    member's data: a tar cut exactly between two members has every header intact but no such block. (The
    member data itself has no checksum to read it for; a compressed tar's stream is checked whole.)"""
    try:
        with tarfile.open(path) as archive:
            for _ in archive:
                pass
            archive.fileobj.seek(archive.offset)
            end = archive.fileobj.read(tarfile.BLOCKSIZE)
    except EOFError as err:  # a compressed tar (bz2, xz) whose stream is cut
        raise Truncated(f"{path.name} ends before its compressed stream does ({err})") from None
    except tarfile.ReadError as err:
        if "unexpected end" in str(err):
            raise Truncated(f"{path.name} ends inside a tar member ({err})") from None
        raise Corrupt(f"{path.name} is not a valid tar file ({err})") from None
    except (OSError, tarfile.TarError, zlib.error) as err:
        raise Corrupt(f"{path.name} is not a valid tar file ({err})") from None
    if len(end) < tarfile.BLOCKSIZE:
        raise Truncated(f"{path.name} ends before its tar end-of-archive block")
    if end.count(0) != len(end):
        raise Corrupt(f"{path.name}: a damaged tar header at byte {archive.offset}")


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, zlib.error):
        return False


def verify_end(path: Path) -> str | None:
    """Read `path` to its format's own end; returns the format ('gzip', 'tar.gz', 'zip', 'tar'), or None
    for a format with no end to check (a `.b` feature file, plain JSON, ...).

    Raises Truncated when the file stops before that end (a body cut short: resumable), Corrupt when it is
    damaged otherwise. The format is read from the first bytes, not the name."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(GZIP_MAGIC):
        _read_gzip(path)
        if _is_tar(path):
            _read_tar(path)
            return "tar.gz"
        return "gzip"
    if head in ZIP_MAGICS:
        _read_zip(path)
        return "zip"
    if _is_tar(path):
        _read_tar(path)
        return "tar"
    return None


# -- one download -------------------------------------------------------------------------------------
def _state_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _state_path(part).unlink(missing_ok=True)


def _resume_point(part: Path, url: str) -> tuple[int, dict]:
    """(bytes of `part` to resume from, what the server said about the file then); (0, {}) when there is
    no partial file of this URL (one of another URL, or of unknown origin, is removed)."""
    state_path = _state_path(part)
    if not part.exists():
        state_path.unlink(missing_ok=True)
        return 0, {}
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        state = {}
    if not isinstance(state, dict) or state.get("url") != url:
        log.warning("%s: partial download of %s, not %s; starting over",
                    part, state.get("url", "an unknown URL") if isinstance(state, dict) else "?", url)
        _discard(part)
        return 0, {}
    return part.stat().st_size, state


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, full size) of a Content-Range header `bytes 100-299/300` or `bytes */300`; None where
    absent or `*`."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _stream_once(url: str, part: Path, timeout: float, progress: bool) -> int | None:
    """One attempt: append to `part` from its current size (Range request), to the end of the body.

    Returns the full size the server announced (None: not announced); Truncated when fewer bytes
    arrived, Corrupt when the server answered with another range or a changed file."""
    offset, state = _resume_point(part, url)
    headers = {}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        etag = state.get("etag") or ""
        validator = etag if etag and not etag.startswith("W/") else state.get("last_modified")
        if validator:  # "only if still the same file": a changed one comes back whole, with 200
            headers["If-Range"] = validator
    with urlopen(Request(url, headers=headers), timeout=timeout) as response:
        total = None
        if offset and response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start is not None and start != offset:
                raise Corrupt(f"asked for bytes from {offset}, the server sent them from {start}")
            if state.get("etag") and response.headers.get("ETag") not in (None, state["etag"]):
                raise Corrupt(f"the file changed on the server (ETag {state['etag']} -> "
                              f"{response.headers['ETag']}) since the partial download began")
        else:  # a first request, or the server ignored the range (or the file changed): a whole body
            offset = 0
            write_text(_state_path(part), json.dumps({"url": url, "etag": response.headers.get("ETag"),
                                                      "last_modified": response.headers.get("Last-Modified")}))
        length = response.headers.get("Content-Length")
        if total is None and length is not None:
            total = offset + int(length)
        with open(part, "ab" if offset else "wb") as out, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[:-5],
                     disable=not progress, leave=False) as bar:
            while block := response.read(CHUNK):
                out.write(block)
                bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size < total:
        raise Truncated(f"connection dropped after {size} of {total} bytes")
    if total is not None and size > total:
        raise Corrupt(f"{size} bytes where the server announced {total}")
    return total


def _already_whole(part: Path, err: HTTPError) -> bool:
    """A 416 (range not satisfiable) for a partial file as long as the whole: it was complete already
    (a run killed after the last byte, before the rename)."""
    _, total = _content_range(err.headers.get("Content-Range") if err.headers else None)
    return part.exists() and total is not None and part.stat().st_size == total


def _completeness(url: str, part: Path, total: int | None, checksum: bool) -> str:
    """How the body in `part` is known to be whole: 'content-length', its format's end, or 'checksum' (the
    caller compares it); Truncated / Corrupt from the format check; a DownloadError when nothing can tell."""
    if total is not None:
        return "content-length"
    fmt = verify_end(part)
    if fmt:
        return fmt
    if checksum:
        return "checksum"
    raise DownloadError(f"{url}: neither a length nor a checksum is available to tell whether the download is "
                        f"complete (the server sent no Content-Length, params.yaml has no sha256/md5 for "
                        f"{part.name[:-5]}, and it is not a gzip, zip or tar file whose end could be checked): "
                        f"refused; add its published sha256 under the dataset's `download.sha256:` "
                        f"({part.stat().st_size} bytes kept in {part})")


def _download_with_retries(url: str, part: Path, retries: int, backoff: float, timeout: float,
                           progress: bool, checksum: bool) -> str:
    """Repeat `_stream_once` (each resuming) until the body is whole; returns how that is known (see
    `_completeness`). A 4xx other than 408/429 fails at once."""
    for attempt in range(retries + 1):
        try:
            total = _stream_once(url, part, timeout, progress)
            return _completeness(url, part, total, checksum)
        except HTTPError as err:
            if err.code == 416 and _already_whole(part, err):
                return "content-length"
            if err.code == 416:  # the range is past the end: what is kept is not a prefix, restart
                _discard(part)
            elif err.code not in RETRYABLE_HTTP:
                raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
            last = f"HTTP {err.code} {err.reason}"
        except Truncated as err:
            last = str(err)
        except Corrupt as err:
            _discard(part)  # resuming would only extend the damage
            last = f"{err}; starting over"
        except (URLError, http.client.HTTPException, OSError) as err:
            last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
        if attempt < retries:
            delay = backoff * 2 ** attempt
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.1f s", url, attempt + 1, retries + 1, last, delay)
            time.sleep(delay)
    kept = part.stat().st_size if part.exists() else 0
    resume = f"; {kept} bytes kept in {part}: the next run resumes from there" if kept else ""
    raise DownloadError(f"{url}: failed after {retries} retries ({retries + 1} attempts); last error: {last}{resume}")


def _present(dest: Path, url: str, sha256: str | None, md5: str | None) -> tuple[str, str] | None:
    """(sha256, how it is known complete) of a file already at `dest`, if it can be trusted; else None."""
    digest = file_digest(dest)
    if sha256 or md5:
        found = (("sha256", sha256, digest), ("md5", md5, file_digest(dest, "md5") if md5 else None))
        wrong = [f"{kind} {got} != expected {want}" for kind, want, got in found if want and got != want]
        if wrong:
            log.warning("%s: present but %s; downloading again", dest, "; ".join(wrong))
            return None
        return digest, "sha256" if sha256 else "md5"
    entry = read_record(dest.parent).get(dest.name) or {}
    if entry.get("complete") and entry.get("sha256") == digest and entry.get("url") == url:
        return digest, entry["complete"]
    try:
        fmt = verify_end(dest)
    except (Truncated, Corrupt) as err:
        log.warning("%s: present but incomplete (%s); downloading again", dest, err)
        return None
    if fmt:
        return digest, fmt
    log.warning("%s: present, but nothing says it is complete (no record of a whole download of %s, no "
                "checksum configured, not a format whose end can be checked); downloading again", dest, url)
    return None


def fetch(url: str, dest: Path, sha256: str | None = None, *, md5: str | None = None, retries: int = 5,
          backoff: float = 1.0, timeout: float = 60.0, progress: bool = True) -> str:
    """Download `url` to `dest` (skipped if already there, complete and valid); returns its sha256.

    The body streams into `dest.part` (resumed from there, by this call's retries or a later call) and
    appears under its final name only when complete (announced length, its format's end, or the
    configured sha256 / md5) and verified; the hash is recorded in `dest.parent/checksums.json`.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = sha256.lower() if sha256 else None
    expected_md5 = md5.lower() if md5 else None
    if dest.exists():
        present = _present(dest, url, expected, expected_md5)
        if present:
            digest, complete = present
            log.info("%s: already present (complete: %s), sha256 %s", dest, complete, digest)
            record_checksum(dest.parent, dest.name, url, digest, bool(expected or expected_md5), complete)
            return digest
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    complete = _download_with_retries(url, part, retries, backoff, timeout, progress,
                                      checksum=bool(expected or expected_md5))
    digest = file_digest(part)
    if expected and digest != expected:
        _discard(part)  # resuming a corrupt file would only reproduce the mismatch
        raise DownloadError(f"{url}: checksum mismatch: expected sha256 {expected}, got {digest}; "
                            f"the file was removed")
    if expected_md5 and (got := file_digest(part, "md5")) != expected_md5:
        _discard(part)
        raise DownloadError(f"{url}: checksum mismatch: expected md5 {expected_md5}, got {got}; the file was removed")
    if expected or expected_md5:
        complete = "sha256" if expected else "md5"
    os.replace(part, dest)
    _state_path(part).unlink(missing_ok=True)
    record_checksum(dest.parent, dest.name, url, digest, bool(expected or expected_md5), complete)
    log.info("%s: %d bytes, sha256 %s, complete (%s)%s", dest, dest.stat().st_size, digest, complete,
             " (verified)" * bool(expected or expected_md5))
    return digest


def _fetch_options(cfg: DownloadConfig, progress: bool) -> dict:
    return {"retries": cfg.retries, "backoff": cfg.backoff, "timeout": cfg.timeout, "progress": progress}


def partial_folder(dest: Path, partial: Path | None = None) -> Path:
    """Where the files of output folder `dest` wait until all are complete: `<partial>/<dataset>`, by default
    `<dest>/../../partial/<dataset>` (data/raw/baby -> data/partial/baby): outside every DVC output."""
    return (Path(partial) if partial else dest.parent.parent / "partial") / dest.name


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not supported
        shutil.copyfile(src, dst)


def _adopt_finished(dest: Path, staging: Path, name: str) -> None:
    """A file of an earlier finished run still in the output folder (a rerun outside DVC, which would have
    deleted it) is linked into `staging` with its record, for `fetch` to find already present; one the
    record does not call complete is left behind (and downloaded again)."""
    old, new = dest / name, staging / name
    entry = read_record(dest).get(name)
    if new.exists() or not old.is_file() or not (entry and entry.get("complete")):
        return
    staging.mkdir(parents=True, exist_ok=True)
    _link_or_copy(old, new)
    write_record(staging, read_record(staging) | {name: entry})


def _publish(staging: Path, dest: Path, names: list[str]) -> None:
    """Put the finished files `names` of `staging` (and their checksums.json entries) in place as the output
    folder `dest` (built as `<dest>.tmp`, then renamed), then remove `staging`: a kill at any point leaves
    either the finished files in `staging` or the output in place."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    record = read_record(staging)
    for name in names:
        _link_or_copy(staging / name, tmp / name)
    write_record(tmp, {name: record[name] for name in names})
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    shutil.rmtree(staging)


def download_amazon2014(cfg: DownloadConfig, dest: Path, progress: bool = True,
                        staging: Path | None = None) -> list[Path]:
    """Fetch the category's review, metadata and image-feature files into `staging` (default
    `partial_folder(dest)`), then move them all into `dest`."""
    staging = staging or partial_folder(dest)
    names = []
    for kind, url in cfg.urls.items():
        name = AMAZON_FILES[kind].format(category=cfg.category)
        _adopt_finished(dest, staging, name)
        fetch(url, staging / name, cfg.sha256.get(name), **_fetch_options(cfg, progress))
        names.append(name)
    _publish(staging, dest, names)
    missing = sorted(set(AMAZON_FILES) - set(cfg.urls))
    if missing:
        log.warning("amazon2014 %s: no URL for %s; the features stage will need another source",
                    cfg.category, missing)
    return [dest / name for name in names]


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


def _copy_files(src: Path, dest: Path, required: list[Path], optional: tuple[str, ...],
                record: dict | None = None) -> list[str]:
    """Copy `required` and whatever of `optional` exists in `src` into a fresh `dest` (temp + rename), with
    `record` (if any) as its checksums.json."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = [p.name for p in required] + [n for n in optional if (src / n).is_file()]
    for name in names:
        shutil.copyfile(src / name, tmp / name)  # contents only: not the source's read-only mode
    if record is not None:
        write_record(tmp, record)
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


def _fetch_and_extract(url: str, cfg: DownloadConfig, staging: Path, progress: bool) -> tuple[Path, dict]:
    """Fetch the archive `url` into `staging` (sha256 / md5 checked), unpack it into `staging/extracted`;
    returns that folder and the archive's checksums.json entry (for the output folder)."""
    archive = staging / url_file_name(url)
    fetch(url, archive, cfg.sha256.get(archive.name), md5=cfg.md5.get(archive.name), **_fetch_options(cfg, progress))
    extracted = staging / "extracted"
    shutil.rmtree(extracted, ignore_errors=True)  # a run killed while unpacking: unpack again
    extract_archive(archive, extracted)
    return extracted, {archive.name: read_record(staging)[archive.name]}


def download_prepared(cfg: DownloadConfig, dest: Path, progress: bool = True,
                      staging: Path | None = None) -> list[str]:
    """`prepared`: a folder or an archive URL in the field's layout; copies `.inter` + features. An archive
    is fetched and unpacked in `staging` (default `partial_folder(dest)`), removed once copied."""
    record = None
    if not _is_url(cfg.path):
        src = local_path(cfg.path)
    else:
        staging = staging or partial_folder(dest)
        extracted, record = _fetch_and_extract(cfg.path, cfg, staging, progress)
        inter = sorted(extracted.rglob("*.inter"))
        if len(inter) != 1:
            raise DataError(f"{cfg.path}: expected exactly one *.inter file in the archive, "
                            f"found {[str(p.relative_to(extracted)) for p in inter] or 'none'}")
        src = inter[0].parent
    if not src.is_dir():
        raise DataError(f"{src}: prepared dataset folder does not exist")
    names = _copy_files(src, dest, [find_inter_file(src)], PREPARED_FILES, record)
    if record is not None:
        shutil.rmtree(staging)
    missing = [n for n in ("image_feat.npy", "text_feat.npy") if n not in names]
    if missing:
        log.warning("%s: no %s; training will need them or explicit stand-ins", cfg.path, missing)
    return names


def download_movielens(cfg: DownloadConfig, dest: Path, progress: bool = True,
                       staging: Path | None = None) -> list[str]:
    """`movielens`: the RecBole atomic files of the folder `path` if it exists, else the GroupLens archive
    (`urls.archive`: fetched into `staging` (default `partial_folder(dest)`), sha256 / md5 checked,
    extracted, converted by pipeline.movielens)."""
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
    staging = staging or partial_folder(dest)
    extracted, record = _fetch_and_extract(cfg.urls["archive"], cfg, staging, progress)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    names = grouplens_to_atomic(extracted, tmp)
    write_record(tmp, record)
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
             synthetic=None, progress: bool = True, partial: Path | None = None) -> Path:
    """Bring dataset `name` into `root/name` from `cfg.source`; returns that folder.

    synthetic: a config.sections.SyntheticConfig for the `synthetic` source (default values if None).
    partial: where files fetched over the network wait until the dataset is complete, in `<partial>/<name>`
    (default `<root>/../partial`, i.e. data/partial): kept after a failure or a kill, for the next run.
    """
    dest = Path(root) / name
    staging = partial_folder(dest, partial)
    check_checksum_names(name, cfg)
    try:
        if cfg.source == "synthetic":
            from pipeline.synthetic import generate, write_dataset
            write_dataset(dest, *generate(synthetic or SyntheticConfig(), seed))
        elif cfg.source == "amazon2014":
            download_amazon2014(cfg, dest, progress, staging)
        elif cfg.source == "prepared":
            download_prepared(cfg, dest, progress, staging)
        elif cfg.source == "movielens":
            download_movielens(cfg, dest, progress, staging)
        else:
            copy_local(local_path(cfg.path), dest)
    finally:
        for folder in (staging, staging.parent):  # nothing kept: no empty folders left either
            try:
                folder.rmdir()
            except FileNotFoundError:
                continue
            except OSError:  # not empty: kept for the next run
                break
    log.info("%s (%s) ready in %s", name, cfg.source, dest)
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="folder name under --root")
    parser.add_argument("--config-json", help="DownloadConfig fields as a JSON object "
                        "(default: `datasets.<dataset>.download` of --params)")
    parser.add_argument("--root", type=Path, default=Path("data/raw"))
    parser.add_argument("--partial", type=Path, help="where unfinished downloads wait, in <partial>/<dataset>, "
                        "outside the stage's output so that DVC keeps them for the next run to resume "
                        "(default: <root>/../partial, i.e. data/partial)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="source synthetic: read `seed` and the `synthetic` section from here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    setup_logging()

    params = load_params(args.params)
    cfg = config_from_json(args.config_json) if args.config_json else dataset_config(params, args.dataset).download
    # DataError (exit 3) and DownloadError (exit 4) end the command through pipeline.errors.run_command
    download(args.dataset, cfg, args.root, params.seed, params.synthetic, progress=not args.no_progress,
             partial=args.partial)


def config_from_json(text: str) -> DownloadConfig:
    """--config-json: a DownloadConfig as a JSON object; anything else is a ParamsError naming the option."""
    try:
        return DownloadConfig(**json.loads(text))
    except (json.JSONDecodeError, TypeError, ValidationError) as err:
        fields = "; ".join(map(describe, err.errors())) if isinstance(err, ValidationError) else err
        raise ParamsError(f"--config-json: expected a JSON object of download fields: {fields}") from None


if __name__ == "__main__":
    run_command(main)
