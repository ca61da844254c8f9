"""The README's `mlflow ui` and `optuna-dashboard` commands serve on 127.0.0.1 (stopped by pid)."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_fetch(command: list[str], url: str, log: Path, timeout: float = 120) -> str:
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                  env=os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return response.read().decode(errors="replace")
            except OSError:
                time.sleep(1)
        pytest.fail(f"{command[0]} did not answer on {url}: {log.read_text()[-2000:]}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_mlflow_ui_serves_the_store(tmp_path):
    port = free_port()
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    page = serve_and_fetch([str(BIN / "mlflow"), "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
                            "--port", str(port), "--workers", "1"],
                           f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=5",
                           tmp_path / "mlflow.log")
    assert '"experiments"' in page and "Default" in page


def test_optuna_dashboard_serves_the_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="synthetic-vbpr-test", storage=storage, direction="maximize")
    study.optimize(lambda trial: trial.suggest_float("alpha1", 1e-4, 1e-1, log=True), n_trials=2)
    port = free_port()
    page = serve_and_fetch([str(BIN / "optuna-dashboard"), storage, "--host", "127.0.0.1", "--port", str(port)],
                           f"http://127.0.0.1:{port}/api/studies", tmp_path / "dashboard.log")
    assert "synthetic-vbpr-test" in page
