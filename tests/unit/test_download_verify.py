"""tasks.download's completeness checks on files (no server): a body of unannounced length counts as
complete only when its format's own end is there (gzip, zip, tar), and a file already in place only when
something says it is whole."""
import gzip
import hashlib
import io
import json
import tarfile
import zipfile

import numpy as np
import pytest

from tasks.download import Corrupt, Truncated, _content_range, _present, verify_end

DATA = np.random.default_rng(1).bytes(200_000)


def tar_bytes(compression: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as archive:
        for name, data in [("a.bin", DATA[:100_000]), ("b.bin", DATA[100_000:])]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.bin", DATA)
    return buffer.getvalue()


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name, data, kind", [
    ("r.json.gz", gzip.compress(DATA), "gzip"),
    ("x.tar.gz", tar_bytes("gz"), "tar.gz"),
    ("x.tgz.bin", tar_bytes("gz"), "tar.gz"),   # the format is read from the bytes, not the name
    ("x.tar", tar_bytes(), "tar"),
    ("x.tar.xz", tar_bytes("xz"), "tar"),
    ("x.zip", zip_bytes(), "zip"),
])
def test_whole_files_pass_and_name_their_format(tmp_path, name, data, kind):
    assert verify_end(write(tmp_path, name, data)) == kind


@pytest.mark.parametrize("name, data, cut", [
    ("r.json.gz", gzip.compress(DATA), 0.5),
    ("r.json.gz", gzip.compress(DATA), -4),                 # only the trailer's size field missing
    ("x.tar.gz", tar_bytes("gz"), 0.5),
    ("x.tar", tar_bytes(), 0.3),                            # inside the first member
    ("x.tar", tar_bytes(), 512 + 100_352),                  # exactly between the two members
    ("x.tar", tar_bytes(), 2 * (512 + 100_352)),             # after the last member, before its end block
    ("x.tar.xz", tar_bytes("xz"), 0.7),
    ("x.zip", zip_bytes(), 0.5),
    ("x.zip", zip_bytes(), -10),                            # inside the end-of-central-directory record
])
def test_files_cut_short_are_truncated_not_complete(tmp_path, name, data, cut):
    end = int(len(data) * cut) if isinstance(cut, float) else cut
    with pytest.raises(Truncated):
        verify_end(write(tmp_path, name, data[:end]))


def test_damaged_files_are_corrupt(tmp_path):
    data = bytearray(gzip.compress(DATA))
    data[-8] ^= 0xFF  # the CRC
    with pytest.raises(Corrupt, match="gzip"):
        verify_end(write(tmp_path, "r.gz", bytes(data)))
    data = bytearray(zip_bytes())
    data[len(data) // 2] ^= 0xFF  # member data: its CRC fails
    with pytest.raises(Corrupt, match="a.bin"):
        verify_end(write(tmp_path, "x.zip", bytes(data)))


def test_other_formats_have_no_end_to_check(tmp_path):
    assert verify_end(write(tmp_path, "image_features_Baby.b", DATA)) is None
    assert verify_end(write(tmp_path, "x.json", b'{"a": 1}\n')) is None
    assert verify_end(write(tmp_path, "empty", b"")) is None


def test_content_range():
    assert _content_range("bytes 100-299/300") == (100, 300)
    assert _content_range("bytes 100-299/*") == (100, None)
    assert _content_range("bytes */300") == (None, 300)
    assert _content_range(None) == (None, None) and _content_range("items 1-2/3") == (None, None)


def test_a_file_in_place_counts_as_present_only_when_known_whole(tmp_path):
    url = "http://example.org/x"
    whole = write(tmp_path, "r.json.gz", gzip.compress(DATA))
    digest = hashlib.sha256(whole.read_bytes()).hexdigest()
    assert _present(whole, url, None, None) == (digest, "gzip")           # its end checks out
    assert _present(whole, url, digest, None) == (digest, "sha256")
    assert _present(whole, url, "0" * 64, None) is None                   # another file than configured
    cut = write(tmp_path, "cut.json.gz", gzip.compress(DATA)[:1000])
    assert _present(cut, url, None, None) is None
    raw = write(tmp_path, "i.b", DATA)
    assert _present(raw, url, None, None) is None                         # nothing says it is whole
    record = {"url": url, "sha256": hashlib.sha256(DATA).hexdigest(), "verified": False}
    (tmp_path / "checksums.json").write_text(json.dumps({"i.b": record}))  # an old record: no `complete`
    assert _present(raw, url, None, None) is None
    (tmp_path / "checksums.json").write_text(json.dumps({"i.b": record | {"complete": "content-length"}}))
    assert _present(raw, url, None, None) == (record["sha256"], "content-length")
    assert _present(raw, "http://example.org/other", None, None) is None  # recorded for another URL
    raw.write_bytes(DATA[:-1])
    assert _present(raw, url, None, None) is None                         # not the file recorded
