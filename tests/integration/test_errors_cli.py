"""Bad input through the real commands (`python -m ...`, pipeline/errors.py's boundary): the documented exit
code, exactly one `error:` line on stderr naming the file or key, and no traceback; a bug keeps its traceback."""
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import EXIT_DATA, EXIT_FAILED, EXIT_SOURCE, EXIT_USAGE

REPO = Path(__file__).resolve().parents[2]
GOOD = "userID\titemID\tx_label\n0\t0\t0\n0\t1\t1\n0\t2\t2\n1\t1\t0\n1\t2\t0\n1\t0\t2\n2\t2\t0\n2\t0\t1\n"


def command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def assert_one_error_line(result: subprocess.CompletedProcess, code: int, *named: str) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == code, output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(text in lines[0] for text in named), lines[0]
    return lines[0]


@pytest.mark.parametrize("case,inter,named", [
    ("exponent", GOOD.replace("1\t1\t0\n", "1\t1e0\t0\n"), ["toy.inter", "line 5", "'itemID'", "'1e0'"]),
    ("huge id", GOOD + "2\t999999999999\t1\n", ["toy.inter", "line 10", "'itemID'", "below 2^31"]),
    ("empty", "", ["toy.inter", "empty file"]),
    ("header only", GOOD.splitlines()[0] + "\n", ["toy.inter", "header only"]),
])
def test_train_on_a_malformed_folder(tmp_path, case, inter, named):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "toy.inter").write_text(inter)
    result = command("-m", "tasks.train", "--data-dir", str(tmp_path / "data"), "--backbone", "bprmf",
                     "--variant", "base", "--epochs", "1", "--out", str(tmp_path / "run"),
                     "--set", "tracking.enabled=false")
    assert_one_error_line(result, EXIT_DATA, str(tmp_path / "data" / "toy.inter"), *named)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_train_on_a_feature_file_whose_header_claims_200_gb(tmp_path):
    import numpy as np

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "toy.inter").write_text(GOOD)
    with open(tmp_path / "data" / "image_feat.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (3, 50_000_000_000 // 3)})
    result = command("-m", "tasks.train", "--data-dir", str(tmp_path / "data"), "--backbone", "vbpr",
                     "--variant", "base", "--epochs", "1", "--out", str(tmp_path / "run"),
                     "--set", "tracking.enabled=false", "--standin-features")
    assert_one_error_line(result, EXIT_DATA, str(tmp_path / "data" / "image_feat.npy"), "the header claims")


@pytest.mark.parametrize("stage", ["filter", "download", "features", "validate"])
def test_an_unknown_dataset(stage):
    result = command("-m", f"tasks.{stage}", "--dataset", "nowhere")
    assert_one_error_line(result, EXIT_USAGE, "dataset 'nowhere'", "datasets:", "params.yaml")


def test_an_unreachable_source(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/prepared.zip"
    config = {"source": "prepared", "path": url, "retries": 0, "timeout": 5}
    result = command("-m", "tasks.download", "--dataset", "x", "--root", str(tmp_path), "--no-progress",
                     "--config-json", json.dumps(config))
    assert_one_error_line(result, EXIT_SOURCE, url, "failed after 0 retries")


def test_a_bad_config_json_names_the_option(tmp_path):
    result = command("-m", "tasks.download", "--dataset", "x", "--root", str(tmp_path),
                     "--config-json", '{"source": "ftp"}')
    assert_one_error_line(result, EXIT_USAGE, "--config-json", "source")


def test_a_bug_keeps_its_traceback(tmp_path):
    """An unexpected error inside main() (here a RuntimeError planted in the filter stage) is not a message:
    its traceback is what a developer needs."""
    code = ("import tasks.filter as stage\n"
            "from pipeline.errors import run_command\n"
            "def planted(*args, **kwargs):\n"
            "    raise RuntimeError('planted bug')\n"
            "stage.copy_split = planted\n"
            "run_command(stage.main)\n")
    result = command("-c", code, "--dataset", "synthetic", "--raw", str(tmp_path / "raw"),
                     "--out", str(tmp_path / "out"))
    assert result.returncode == EXIT_FAILED, result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().endswith("RuntimeError: planted bug")
    assert "error: " not in result.stderr
