"""tasks.download against a real HTTP server on 127.0.0.1 (started and stopped by each test)."""
import gzip
import hashlib
import io
import json
import logging
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from pydantic import ValidationError

import tasks.download as download_module
from config.sections import DownloadConfig, SyntheticConfig
from models.data import DataError, load_dataset
from tasks.download import DownloadError, download, fetch, main

BODY = np.random.default_rng(0).bytes(300_000)  # several read blocks, so a cut lands mid-file
FAST = {"retries": 3, "backoff": 0.0, "timeout": 5.0, "progress": False}


class FileHandler(BaseHTTPRequestHandler):
    """Serves `files` with Range support (416 past the end); `drop` maps a path to how many responses to cut
    at half; paths in `no_length` are sent without Content-Length (the body ends where the connection
    closes, as HTTP/1.0 allows); `etags` gives a path an ETag, and a Range whose If-Range names another
    one gets the whole file (200), as RFC 9110 says."""

    files: dict[str, bytes] = {}
    drop: dict[str, int] = {}
    no_length: set[str] = set()
    etags: dict[str, str] = {}
    requests: list[tuple[str, str | None]] = []
    if_range: list[str | None] = []

    def do_GET(self):
        self.requests.append((self.path, self.headers.get("Range")))
        self.if_range.append(self.headers.get("If-Range"))
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        etag = self.etags.get(self.path)
        ranged = self.headers.get("Range") and self.headers.get("If-Range") in (None, etag)
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if ranged else 0
        if start and start >= len(body):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:  # without a length, the total is not announced here either
            total = "*" if self.path in self.no_length else len(body)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{total}")
        if etag:
            self.send_header("ETag", etag)
        if self.path not in self.no_length:
            self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if self.drop.get(self.path, 0) > 0:
            self.drop[self.path] -= 1
            payload = payload[: len(payload) // 2]  # send half, hang up (after announcing all, if announced)
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """(base URL, handler class) of a fresh server on 127.0.0.1; shut down after the test."""
    handler = type("Handler", (FileHandler,), {"files": {}, "drop": {}, "no_length": set(), "etags": {},
                                               "requests": [], "if_range": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)  # fast stop
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_good_download_records_checksum_and_skips_when_present(server, tmp_path):
    base, handler = server
    handler.files["/data.bin"] = BODY
    dest = tmp_path / "raw" / "data.bin"
    digest = fetch(f"{base}/data.bin", dest, retries=0, progress=True)
    assert dest.read_bytes() == BODY and digest == sha(BODY)
    assert not dest.with_name("data.bin.part").exists()
    record = json.loads((dest.parent / "checksums.json").read_text())
    assert record["data.bin"] == {"url": f"{base}/data.bin", "sha256": sha(BODY), "verified": False,
                                  "complete": "content-length"}
    fetch(f"{base}/data.bin", dest, **FAST)  # present, and recorded as complete: no second request
    fetch(f"{base}/data.bin", dest, sha256=sha(BODY), **FAST)  # present and valid: no second request
    assert len(handler.requests) == 1
    record = json.loads((dest.parent / "checksums.json").read_text())
    assert record["data.bin"]["verified"] is True and record["data.bin"]["complete"] == "sha256"


def test_dropped_connection_resumes_with_a_range_request(server, tmp_path):
    base, handler = server
    handler.files["/data.bin"], handler.drop["/data.bin"] = BODY, 1
    dest = tmp_path / "data.bin"
    fetch(f"{base}/data.bin", dest, sha256=sha(BODY), **FAST)
    assert dest.read_bytes() == BODY and not dest.with_name("data.bin.part").exists()
    assert handler.requests == [("/data.bin", None), ("/data.bin", f"bytes={len(BODY) // 2}-")]


def test_connection_dropped_every_time_fails_clearly_without_a_final_file(server, tmp_path):
    base, handler = server
    handler.files["/data.bin"], handler.drop["/data.bin"] = BODY, 100
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match=r"/data.bin: failed after 2 retries \(3 attempts\); "
                                             r"last error: connection dropped after \d+ of 300000 bytes; "
                                             r"\d+ bytes kept in .*data.bin.part: the next run resumes"):
        fetch(f"{base}/data.bin", dest, **(FAST | {"retries": 2}))
    assert not dest.exists() and len(handler.requests) == 3
    assert 0 < dest.with_name("data.bin.part").stat().st_size < len(BODY)  # kept for a later resume only


def test_checksum_mismatch_names_both_hashes_and_leaves_nothing(server, tmp_path):
    base, handler = server
    handler.files["/data.bin"] = BODY
    dest, wrong = tmp_path / "data.bin", "0" * 64
    with pytest.raises(DownloadError) as err:
        fetch(f"{base}/data.bin", dest, sha256=wrong, **FAST)
    assert f"{base}/data.bin" in str(err.value) and "checksum mismatch" in str(err.value)
    assert wrong in str(err.value) and sha(BODY) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_404_fails_at_once_naming_the_url(server, tmp_path):
    base, handler = server
    with pytest.raises(DownloadError, match=r"http://127\.0\.0\.1:\d+/missing\.gz: HTTP 404"):
        fetch(f"{base}/missing.gz", tmp_path / "missing.gz", **FAST)
    assert len(handler.requests) == 1 and list(tmp_path.iterdir()) == []


# -- resuming across runs, and bodies that only look complete (issue 15 item 3) ----------------------------
GZ = gzip.compress(BODY)  # incompressible: about as long as BODY, so a cut lands mid-stream


def test_a_download_cut_in_one_run_resumes_in_the_next_with_a_range_request(server, tmp_path):
    base, handler = server
    handler.files["/data.bin"], handler.drop["/data.bin"] = BODY, 1
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match="the next run resumes"):
        fetch(f"{base}/data.bin", dest, **(FAST | {"retries": 0}))
    kept = dest.with_name("data.bin.part").stat().st_size
    assert not dest.exists() and kept == len(BODY) // 2
    fetch(f"{base}/data.bin", dest, **FAST)  # a new run
    assert handler.requests == [("/data.bin", None), ("/data.bin", f"bytes={kept}-")]
    assert dest.read_bytes() == BODY and not dest.with_name("data.bin.part").exists()
    assert json.loads((tmp_path / "checksums.json").read_text())["data.bin"]["complete"] == "content-length"


def test_partial_files_survive_dvc_deleting_the_output_folder(server, tmp_path):
    """`dvc repro` deletes data/raw/<dataset> before it runs the stage again: what was fetched waits in
    data/partial/<dataset>, so the finished files are not fetched again and the cut one resumes."""
    base, handler = server
    images = BODY[::-1]
    handler.files |= {"/r.gz": GZ, "/m.gz": b"meta", "/i.b": images}
    handler.drop["/i.b"] = 1
    cfg = DownloadConfig(source="amazon2014", category="Baby", retries=0,
                         urls={"reviews": f"{base}/r.gz", "meta": f"{base}/m.gz", "images": f"{base}/i.b"})
    raw, partial = tmp_path / "data" / "raw", tmp_path / "data" / "partial"
    with pytest.raises(DownloadError, match=r"i\.b: failed after 0 retries.*kept in .*image_features_Baby\.b\.part"):
        download("baby", cfg, raw, progress=False)
    assert not (raw / "baby").exists()
    assert sorted(p.name for p in (partial / "baby").iterdir()) == [
        "checksums.json", "image_features_Baby.b.part", "image_features_Baby.b.part.json",
        "meta_Baby.json.gz", "reviews_Baby_5.json.gz"]
    (raw / "baby").mkdir(parents=True)  # what DVC does before the stage runs again
    shutil.rmtree(raw / "baby")
    dest = download("baby", cfg, raw, progress=False)
    assert handler.requests[3:] == [("/i.b", f"bytes={len(images) // 2}-")]  # only the cut file, from its cut
    assert (dest / "image_features_Baby.b").read_bytes() == images
    assert (dest / "reviews_Baby_5.json.gz").read_bytes() == GZ
    assert not partial.exists()
    record = json.loads((dest / "checksums.json").read_text())
    assert sorted(record) == ["image_features_Baby.b", "meta_Baby.json.gz", "reviews_Baby_5.json.gz"]
    assert {entry["complete"] for entry in record.values()} == {"content-length"}


def test_the_partial_folder_of_the_cli_is_data_partial(server, tmp_path, monkeypatch, request):
    """The stage's command (dvc.yaml) keeps partial files under --partial, outside its output."""
    base, handler = server
    handler.files["/r.gz"], handler.drop["/r.gz"] = GZ, 1
    params = str(request.config.rootpath / "params.yaml")
    monkeypatch.chdir(tmp_path)
    config = json.dumps({"source": "amazon2014", "category": "Baby", "urls": {"reviews": f"{base}/r.gz"},
                         "retries": 0})
    with pytest.raises(DownloadError):
        main(["--dataset", "baby", "--root", "data/raw", "--partial", "data/partial", "--no-progress",
              "--params", params, "--config-json", config])
    assert (tmp_path / "data/partial/baby/reviews_Baby_5.json.gz.part").stat().st_size == len(GZ) // 2
    # the defaults: --root data/raw, --partial <root>/../partial
    main(["--dataset", "baby", "--no-progress", "--params", params, "--config-json", config])
    assert handler.requests[-1] == ("/r.gz", f"bytes={len(GZ) // 2}-")
    assert (tmp_path / "data/raw/baby/reviews_Baby_5.json.gz").read_bytes() == GZ
    assert not (tmp_path / "data/partial").exists()


def test_a_cut_gzip_without_content_length_is_never_complete(server, tmp_path, caplog):
    base, handler = server
    handler.files["/r.json.gz"], handler.drop["/r.json.gz"] = GZ, 1
    handler.no_length.add("/r.json.gz")
    dest = tmp_path / "r.json.gz"
    with pytest.raises(DownloadError, match=r"/r\.json\.gz: failed after 0 retries.*ends before its gzip "
                                            r"end-of-stream marker.*the next run resumes"):
        fetch(f"{base}/r.json.gz", dest, **(FAST | {"retries": 0}))
    assert not dest.exists()
    caplog.set_level(logging.INFO, logger="tasks.download")
    fetch(f"{base}/r.json.gz", dest, **FAST)  # the rerun resumes; it does not find the file "already present"
    assert "already present" not in caplog.text
    assert handler.requests[-1] == ("/r.json.gz", f"bytes={len(GZ) // 2}-")
    assert dest.read_bytes() == GZ
    assert json.loads((tmp_path / "checksums.json").read_text())["r.json.gz"]["complete"] == "gzip"


def test_a_cut_gzip_without_content_length_is_resumed_by_the_retries(server, tmp_path):
    base, handler = server
    handler.files["/r.json.gz"], handler.drop["/r.json.gz"] = GZ, 2
    handler.no_length.add("/r.json.gz")
    dest = tmp_path / "r.json.gz"
    fetch(f"{base}/r.json.gz", dest, **FAST)
    assert dest.read_bytes() == GZ and [r for _, r in handler.requests][1:] == [
        f"bytes={len(GZ) // 2}-", f"bytes={len(GZ) // 2 + (len(GZ) - len(GZ) // 2) // 2}-"]


def test_a_truncated_file_saved_by_an_earlier_version_is_not_already_present(server, tmp_path, caplog):
    """The old code saved a cut body without Content-Length as finished, and recorded it: not trusted now."""
    base, handler = server
    handler.files["/r.json.gz"] = GZ
    handler.no_length.add("/r.json.gz")
    dest = tmp_path / "r.json.gz"
    dest.write_bytes(GZ[: len(GZ) // 2])
    (tmp_path / "checksums.json").write_text(json.dumps({"r.json.gz": {
        "url": f"{base}/r.json.gz", "sha256": sha(GZ[: len(GZ) // 2]), "verified": False}}))
    caplog.set_level(logging.INFO, logger="tasks.download")
    fetch(f"{base}/r.json.gz", dest, **FAST)
    assert "already present" not in caplog.text and "present but incomplete" in caplog.text
    assert dest.read_bytes() == GZ and handler.requests == [("/r.json.gz", None)]


def test_whole_archives_without_content_length_pass(server, tmp_path):
    base, handler = server
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w:gz") as archive:
        info = tarfile.TarInfo("a.bin")
        info.size = len(BODY)
        archive.addfile(info, io.BytesIO(BODY))
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("a.bin", BODY)
    handler.files |= {"/r.json.gz": GZ, "/a.tar.gz": tar.getvalue(), "/a.zip": zipped.getvalue()}
    handler.no_length |= {"/r.json.gz", "/a.tar.gz", "/a.zip"}
    for name, body, kind in [("r.json.gz", GZ, "gzip"), ("a.tar.gz", tar.getvalue(), "tar.gz"),
                             ("a.zip", zipped.getvalue(), "zip")]:
        fetch(f"{base}/{name}", tmp_path / name, **FAST)
        assert (tmp_path / name).read_bytes() == body
        assert json.loads((tmp_path / "checksums.json").read_text())[name]["complete"] == kind
    assert len(handler.requests) == 3


def test_a_body_neither_length_nor_checksum_can_check_is_refused(server, tmp_path):
    base, handler = server
    handler.files["/i.b"] = BODY
    handler.no_length.add("/i.b")
    dest = tmp_path / "i.b"
    with pytest.raises(DownloadError, match=r"http://127\.0\.0\.1:\d+/i\.b: neither a length nor a checksum is "
                                            r"available.*sha256"):
        fetch(f"{base}/i.b", dest, **FAST)
    assert not dest.exists() and len(handler.requests) == 1  # refused at once: a retry could tell no more
    fetch(f"{base}/i.b", dest, sha256=sha(BODY), **FAST)  # with a checksum: accepted (and resumed: 416)
    assert dest.read_bytes() == BODY
    assert handler.requests[-1] == ("/i.b", f"bytes={len(BODY)}-")
    assert json.loads((tmp_path / "checksums.json").read_text())["i.b"]["complete"] == "sha256"


def test_a_run_killed_after_the_last_byte_finishes_without_downloading_again(server, tmp_path, monkeypatch):
    base, handler = server
    handler.files["/data.bin"] = BODY
    dest = tmp_path / "data.bin"
    real = download_module.file_digest
    monkeypatch.setattr(download_module, "file_digest", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        fetch(f"{base}/data.bin", dest, **FAST)
    monkeypatch.setattr(download_module, "file_digest", real)
    fetch(f"{base}/data.bin", dest, **FAST)
    assert handler.requests == [("/data.bin", None), ("/data.bin", f"bytes={len(BODY)}-")]  # answered 416
    assert dest.read_bytes() == BODY


def test_a_partial_file_is_resumed_only_from_the_same_file(server, tmp_path):
    """Of another URL: not resumed. Changed on the server (another ETag): If-Range brings the whole file."""
    base, handler = server
    new = BODY[::-1]
    handler.files |= {"/a/data.bin": BODY, "/b/data.bin": new}
    handler.drop["/a/data.bin"] = 1
    handler.etags["/a/data.bin"] = '"v1"'
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError):
        fetch(f"{base}/a/data.bin", dest, **(FAST | {"retries": 0}))
    fetch(f"{base}/b/data.bin", dest, **FAST)
    assert handler.requests[-1] == ("/b/data.bin", None) and dest.read_bytes() == new
    dest.unlink()
    handler.drop["/a/data.bin"] = 1
    with pytest.raises(DownloadError):
        fetch(f"{base}/a/data.bin", dest, **(FAST | {"retries": 0}))
    handler.files["/a/data.bin"], handler.etags["/a/data.bin"] = new, '"v2"'
    fetch(f"{base}/a/data.bin", dest, **FAST)
    assert handler.requests[-1] == ("/a/data.bin", f"bytes={len(BODY) // 2}-") and handler.if_range[-1] == '"v1"'
    assert dest.read_bytes() == new


def test_amazon2014_files_get_their_canonical_names(server, tmp_path):
    base, handler = server
    handler.files |= {"/r.gz": b"reviews", "/m.gz": b"meta", "/i.b": b"images"}
    cfg = DownloadConfig(source="amazon2014", category="Baby", retries=0,
                         urls={"reviews": f"{base}/r.gz", "meta": f"{base}/m.gz", "images": f"{base}/i.b"},
                         sha256={"meta_Baby.json.gz": sha(b"meta")})
    dest = download("baby", cfg, tmp_path / "raw", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # the partial folder is gone once done
    assert sorted(p.name for p in dest.iterdir()) == ["checksums.json", "image_features_Baby.b",
                                                     "meta_Baby.json.gz", "reviews_Baby_5.json.gz"]
    record = json.loads((dest / "checksums.json").read_text())
    assert record["meta_Baby.json.gz"]["verified"] and not record["reviews_Baby_5.json.gz"]["verified"]
    download("baby", cfg, tmp_path / "raw", progress=False)  # again, outside DVC: the files are already there
    assert len(handler.requests) == 3 and json.loads((dest / "checksums.json").read_text()) == record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_a_checksum_for_no_fetched_file_is_refused_before_any_download(server, tmp_path):
    """A typo in a `sha256:` file name would leave the file it meant to protect unverified."""
    base, handler = server
    handler.files |= {"/r.gz": b"reviews", "/m.gz": b"meta"}
    cfg = DownloadConfig(source="amazon2014", category="Baby", retries=0,
                         urls={"reviews": f"{base}/r.gz", "meta": f"{base}/m.gz"},
                         sha256={"meta_baby.json.gz": sha(b"meta")})   # lower-case b: matches nothing
    with pytest.raises(DataError, match=r"datasets.baby.download.sha256: \['meta_baby.json.gz'\] match no file"):
        download("baby", cfg, tmp_path, progress=False)
    assert not (tmp_path / "baby").exists()
    local = DownloadConfig(source="local", path=str(tmp_path), sha256={"x.inter": "00"})
    with pytest.raises(DataError, match="nothing over the network"):
        download("toy", local, tmp_path / "out", progress=False)


@pytest.fixture
def prepared_folder(write_inter, good_rows):
    """prepared_folder(folder): a prepared dataset there (toy.inter of 3 items, their two feature files)."""
    def make(folder):
        write_inter(folder, good_rows, name="toy")
        np.save(folder / "image_feat.npy", np.ones((3, 4), np.float32))
        np.save(folder / "text_feat.npy", np.ones((3, 2), np.float32))
        return folder

    return make


def test_prepared_archive_url_is_extracted_into_place(server, tmp_path, prepared_folder):
    base, handler = server
    src = prepared_folder(tmp_path / "src" / "toy")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(src, arcname="bundle/toy")
    handler.files["/toy.tar.gz"] = buffer.getvalue()
    dest = download("toy", DownloadConfig(source="prepared", path=f"{base}/toy.tar.gz"), tmp_path / "raw",
                    progress=False)
    data = load_dataset(dest)
    assert data.features["image"].shape == (3, 4) and data.standin_features == []
    assert "toy.tar.gz" in json.loads((dest / "checksums.json").read_text())
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["toy"]  # no staging left
    assert not (tmp_path / "partial").exists()


def test_prepared_folder_and_local_copy(tmp_path, prepared_folder):
    src = prepared_folder(tmp_path / "src")
    (src / "i_id_mapping.csv").write_text("asin\titemID\nA\t0\nB\t1\nC\t2\n")
    (src / "notes.txt").write_text("not part of the layout")
    prepared = download("p", DownloadConfig(source="prepared", path=str(src)), tmp_path / "raw")
    assert sorted(p.name for p in prepared.iterdir()) == ["i_id_mapping.csv", "image_feat.npy",
                                                         "text_feat.npy", "toy.inter"]
    local = download("l", DownloadConfig(source="local", path=str(src)), tmp_path / "raw")
    assert sorted(p.name for p in local.iterdir()) == ["i_id_mapping.csv", "toy.inter"]
    assert load_dataset(local).n_items == 3
    with pytest.raises(DataError, match="does not exist"):
        download("x", DownloadConfig(source="local", path=str(tmp_path / "nowhere")), tmp_path / "raw")


def test_synthetic_source_writes_a_loadable_dataset(tmp_path):
    cfg = SyntheticConfig(n_users=40, n_items=80, image_dim=8, text_dim=8)
    dest = download("syn", DownloadConfig(source="synthetic"), tmp_path, seed=1, synthetic=cfg)
    assert load_dataset(dest).n_users == 40


def test_config_refuses_incomplete_sources():
    with pytest.raises(ValidationError, match="category"):
        DownloadConfig(source="amazon2014", urls={"reviews": "http://x"})
    with pytest.raises(ValidationError, match="reviews"):
        DownloadConfig(source="amazon2014", category="Baby", urls={"pictures": "http://x"})
    with pytest.raises(ValidationError, match="path"):
        DownloadConfig(source="local")
    with pytest.raises(ValidationError, match="extra"):
        DownloadConfig(source="local", path="x", mirror="y")
