"""Fixtures of the e2e layer.

One Airflow deployment per session (`deployment`: a temporary copy of the repository in the tiny
configuration and a migrated AIRFLOW_HOME), and one set of its servers (`servers`: scheduler, dag
processor, API server on 127.0.0.1), shared by test_dag (REST) and test_ui_browser (the UI in Chromium).
The hooks below run the tests that use `servers` one after another and stop the servers after the last
of them, so that the rest of the session does not share the CPUs with an idle Airflow.
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
SERVERS = "servers"   # the fixture the hooks below group the tests by
_STOP_SERVERS = pytest.StashKey()


def _tiny_params(path: Path) -> None:
    """params.yaml at `path` cut to the tiny configuration of test_pipeline (and test_dag's real runs)."""
    params = yaml.safe_load(path.read_text())
    params["synthetic"].update(n_users=80, n_items=120, image_dim=16, text_dim=8, mean_interactions=8)
    params["datasets"]["synthetic"]["train"].update(epochs=2, batch_size=256)
    params["validate"]["datasets"]["synthetic"].update(image_dim=16, text_dim=8)
    params["tune"].update(backbones=["vbpr"], n_trials=2, epochs=2, startup_trials=1)
    params["pipeline"].update(backbones=["vbpr", "freedom"], references=["pop"], seeds=[1, 2], bootstrap=50,
                              ablation_backbones=["vbpr"], ablations=["encoder_only"])
    params["sweep"].update(backbones=["vbpr"], seeds=[1, 2], epochs=2, workers=1, grid="small")
    params["sweep"]["grids"]["small"] = {"base": {"n_users": 60, "interactions_per_item": 6.0},
                                         "vary": {"nonlinearity": [1.0]}}
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="session")
def tiny_params():
    """tiny_params(path): rewrite the params.yaml at `path` to a configuration `dvc repro` runs in minutes."""
    return _tiny_params


# --- an Airflow deployment ---------------------------------------------------------------------

def _airflow_env(home: Path, work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != "MRDIB_TRACKING"}
    return env | {
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(work / "dags"), "MRDIB_WORKSPACE": str(work),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
    }


@pytest.fixture(scope="session")
def airflow_env():
    """airflow_env(home, work): the environment of Airflow with AIRFLOW_HOME `home`, the DAGs and workspace of
    the repository copy `work`, MLflow in `home`/mlflow.db."""
    return _airflow_env


def _tiny(path: Path, tiny_params) -> None:
    """test_pipeline's tiny configuration, its validation widths matched, one ablation setting."""
    tiny_params(path)
    params = yaml.safe_load(path.read_text())
    widths = {key: params["synthetic"][key] for key in ("image_dim", "text_dim")}
    params.get("validate", {}).get("datasets", {}).get("synthetic", {}).update(widths)
    if "ablations" in params["pipeline"]:
        params["pipeline"]["ablations"] = params["pipeline"]["ablations"][:1]
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _repo_copy(dest: Path, tiny_params) -> Path:
    """The repository's files (tracked and new, not ignored) in `dest`, a fresh git repo, tiny params."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    _tiny(dest / "params.yaml", tiny_params)
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(command, cwd=dest, check=True, capture_output=True)
    return dest


@pytest.fixture(scope="session")
def deployment(tmp_path_factory, tiny_params):
    """(work, home, env): a workspace and a migrated AIRFLOW_HOME (with the routing policy), shared by the
    real runs of the session."""
    work = _repo_copy(tmp_path_factory.mktemp("workspace"), tiny_params)
    home = tmp_path_factory.mktemp("airflow")
    (home / "config").mkdir()
    shutil.copy(work / "dags/policy/airflow_local_settings.py", home / "config")
    env = _airflow_env(home, work)
    migrated = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return work, home, env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(started: dict) -> None:
    for process, _ in started.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process, _ in started.values():
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def servers(deployment, tmp_path_factory, request):
    """(base URL, {name: (process, log)}): scheduler, dag processor and API server of `deployment` on
    127.0.0.1 (LocalExecutor, simple auth manager with every user an admin); stopped by process id after
    the last test that uses them (see pytest_runtest_teardown)."""
    work, home, env = deployment
    logs = tmp_path_factory.mktemp("airflow-servers")
    port = free_port()
    env = env | {"AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__WORKERS": "1",
                 "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                 "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
                 "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                 "AIRFLOW__CORE__PARALLELISM": "2", "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False"}
    started = {}
    request.config.stash[_STOP_SERVERS] = lambda: _stop(started)
    try:
        for name in ("api-server", "scheduler", "dag-processor"):
            log = logs / f"{name}.log"
            with log.open("w") as out:
                started[name] = (subprocess.Popen([AIRFLOW, name], env=env, stdout=out, stderr=subprocess.STDOUT,
                                                  start_new_session=True), log)
        yield f"http://127.0.0.1:{port}", started
    finally:
        _stop(started)


def _uses_servers(item) -> bool:
    return SERVERS in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items):
    """The tests that use `servers` run one after another, where the first of them was: one start for all."""
    using = [item for item in items if _uses_servers(item)]
    if len(using) > 1:
        first = items.index(using[0])
        others = [item for item in items if not _uses_servers(item)]
        items[:] = others[:first] + using + others[first:]


def pytest_runtest_teardown(item, nextitem):
    """Stop the servers after the last test that uses them (the session fixture's own teardown comes at the
    session's end, after every other layer's tests)."""
    if _uses_servers(item) and (nextitem is None or not _uses_servers(nextitem)):
        stop = item.config.stash.get(_STOP_SERVERS, None)
        if stop is not None:
            stop()


# --- talking to the servers ----------------------------------------------------------------------

def _api(base: str, path: str, body: dict | None = None, method: str | None = None) -> dict:
    request = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _wait_for(what: str, check, seconds: float, servers: dict):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, (process, log) in servers.items():
            assert process.poll() is None, f"{name} exited:\n{log.read_text()[-3000:]}"
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def api():
    """api(base, path, body=None, method=None): the JSON answer of a REST call (a body is POSTed as JSON)."""
    return _api


@pytest.fixture(scope="session")
def wait_for():
    """wait_for(what, check, seconds, started): check()'s first truthy value, polled every 2 s (an OSError
    counts as not yet); fails when one of the `started` servers exits or after `seconds`."""
    return _wait_for


@pytest.fixture(scope="session")
def repo_copy(tiny_params):
    """repo_copy(dest) -> dest: the repository in a fresh git repo with the tiny configuration (as `deployment`)."""
    return lambda dest: _repo_copy(dest, tiny_params)


@pytest.fixture(name="free_port", scope="session")
def free_port_fixture():
    """free_port() -> a port nothing listens on at 127.0.0.1."""
    return free_port
