"""tasks.download against a real HTTP server on 127.0.0.1 (started and stopped by each test)."""
import hashlib
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from pydantic import ValidationError

from config.sections import DownloadConfig, SyntheticConfig
from models.data import DataError, load_dataset
from tasks.download import DownloadError, download, fetch

BODY = np.random.default_rng(0).bytes(300_000)  # several read blocks, so a cut lands mid-file
FAST = {"retries": 3, "backoff": 0.0, "timeout": 5.0, "progress": False}


class FileHandler(BaseHTTPRequestHandler):
    """Serves `files` with Range support; `drop` maps a path to how many responses to cut at half."""

    files: dict[str, bytes] = {}
    drop: dict[str, int] = {}
    requests: list[tuple[str, str | None]] = []

    def do_GET(self):
        self.requests.append((self.path, self.headers.get("Range")))
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if self.drop.get(self.path, 0) > 0:
            self.drop[self.path] -= 1
            payload = payload[: len(payload) // 2]  # announce everything, send half, hang up
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """(base URL, handler class) of a fresh server on 127.0.0.1; shut down after the test."""
    handler = type("Handler", (FileHandler,), {"files": {}, "drop": {}, "requests": []})
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
    assert record["data.bin"] == {"url": f"{base}/data.bin", "sha256": sha(BODY), "verified": False}
    fetch(f"{base}/data.bin", dest, sha256=sha(BODY), **FAST)  # present and valid: no second request
    assert len(handler.requests) == 1
    assert json.loads((dest.parent / "checksums.json").read_text())["data.bin"]["verified"] is True


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
                                             r"last error: connection dropped after \d+ of 300000 bytes"):
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


def test_amazon2014_files_get_their_canonical_names(server, tmp_path):
    base, handler = server
    handler.files |= {"/r.gz": b"reviews", "/m.gz": b"meta", "/i.b": b"images"}
    cfg = DownloadConfig(source="amazon2014", category="Baby", retries=0,
                         urls={"reviews": f"{base}/r.gz", "meta": f"{base}/m.gz", "images": f"{base}/i.b"},
                         sha256={"meta_Baby.json.gz": sha(b"meta")})
    dest = download("baby", cfg, tmp_path, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == ["checksums.json", "image_features_Baby.b",
                                                     "meta_Baby.json.gz", "reviews_Baby_5.json.gz"]
    record = json.loads((dest / "checksums.json").read_text())
    assert record["meta_Baby.json.gz"]["verified"] and not record["reviews_Baby_5.json.gz"]["verified"]


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
