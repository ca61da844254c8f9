"""GPU workers for real: a CeleryExecutor deployment routes a run's graphs, tune and train tasks to the `gpu` queue.

Redis (the Debian package `redis-server`) is the broker and result backend, on a free 127.0.0.1 port with no
persistence; a scheduler, a dag processor and an API server (the execution API the workers call) share a
temporary AIRFLOW_HOME with the routing policy (dags/policy/airflow_local_settings.py) and a temporary copy of
the repository in the tiny configuration. Two Celery workers with one slot each stand for two machines: one
listens on the default queue only, the other on `gpu` only, and each reports its own host name to Airflow
(`[core] hostname_callable`, since both run on this machine). A run triggered over REST with
`train_queue: gpu` must put graphs/tune/train on the gpu worker and every other task on the default worker:
the REST API's task instances carry `queue` and `hostname`. Every process is stopped by its process group.
"""
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (Debian package redis-server; .ci/run "
                                       "installs it): no Celery broker for the worker-routing test")

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAG_ID = "mrdib_pipeline"
ROUTED = {"graphs", "tune", "train"}   # the per-backbone tasks the policy sends to `train_queue`
DEFAULT_QUEUE = "default"              # Airflow's [operators] default_queue
WORKERS = {"default-worker": DEFAULT_QUEUE, "gpu-worker": "gpu"}   # host name -> the one queue it listens on
CONF = {"datasets": ["synthetic"], "backbones": ["vbpr"], "seeds": [1], "device": "cpu", "tune": False,
        "train_queue": "gpu"}
# Each worker's host name, as Airflow records it on the task instances it runs (`[core] hostname_callable`).
HOSTNAME_MODULE = "import os\n\n\ndef hostname():\n    return os.environ['MRDIB_TEST_WORKER_HOST']\n"


class Processes:
    """Started processes, each in its own session (process group) with its log file; stopped by group id."""

    def __init__(self, logs: Path):
        self.logs, self.started = logs, {}

    def start(self, name: str, command: list[str], env: dict) -> None:
        log = self.logs / f"{name}.log"
        with log.open("w") as out:
            self.started[name] = (subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                   start_new_session=True), log)

    def tails(self, chars: int = 2500) -> str:
        return "\n".join(f"--- {name} ---\n{log.read_text(errors='replace')[-chars:]}"
                         for name, (_, log) in self.started.items())

    def wait_for(self, what: str, check, seconds: float):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for name, (process, log) in self.started.items():
                assert process.poll() is None, f"{name} exited:\n{log.read_text(errors='replace')[-3000:]}"
            try:
                value = check()
                if value:
                    return value
            except OSError:
                pass
            time.sleep(2)
        raise AssertionError(f"timed out waiting for {what}\n{self.tails()}")

    def stop(self) -> None:
        for process, _ in reversed(self.started.values()):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process, _ in self.started.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for process, _ in self.started.values():   # children left behind in a group (a task's dvc run)
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def celery_cluster(tmp_path_factory, repo_copy, free_port):
    """Redis, a migrated AIRFLOW_HOME (CeleryExecutor, the routing policy), the Airflow servers, two workers."""
    work = repo_copy(tmp_path_factory.mktemp("celery-workspace"))
    home = tmp_path_factory.mktemp("celery-airflow")
    (home / "config").mkdir()
    shutil.copy(work / "dags/policy/airflow_local_settings.py", home / "config")
    (home / "redis").mkdir()
    (home / "hostnames").mkdir()
    (home / "hostnames/mrdib_test_worker_host.py").write_text(HOSTNAME_MODULE)
    redis_port, api_port = free_port(), free_port()
    broker = f"redis://127.0.0.1:{redis_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != "MRDIB_TRACKING"} | {
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(work / "dags"), "MRDIB_WORKSPACE": str(work),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": f"{broker}/0", "AIRFLOW__CELERY__RESULT_BACKEND": f"{broker}/1",
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1", "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(api_port), "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True", "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    }
    processes = Processes(tmp_path_factory.mktemp("celery-logs"))
    try:
        processes.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", str(home / "redis")], env)
        migrated = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        for name in ("api-server", "scheduler", "dag-processor"):
            processes.start(name, [AIRFLOW, name], env)
        for host, queue in WORKERS.items():
            worker_env = env | {"AIRFLOW__CORE__HOSTNAME_CALLABLE": "mrdib_test_worker_host.hostname",
                                "MRDIB_TEST_WORKER_HOST": host,
                                "PYTHONPATH": os.pathsep.join(filter(None, [str(home / "hostnames"),
                                                                            env.get("PYTHONPATH")]))}
            # one slot each; no log server (its port, 8793, would be taken twice on one machine: the API
            # server reads the task logs from the shared AIRFLOW_HOME here)
            processes.start(host, [AIRFLOW, "celery", "worker", "--queues", queue, "--concurrency", "1",
                                   "--celery-hostname", f"{host}@%h", "--skip-serve-logs"], worker_env)
        yield f"http://127.0.0.1:{api_port}", processes, work
    finally:
        processes.stop()


def test_train_queue_sends_graphs_tune_and_train_to_the_gpu_worker_only(celery_cluster, api):
    base, processes, work = celery_cluster
    begin = time.monotonic()
    processes.wait_for("the API server", lambda: api(base, "/api/v2/monitor/health"), 180)
    processes.wait_for("the DAG to be parsed", lambda: api(base, f"/api/v2/dags/{DAG_ID}"), 180)
    for host in WORKERS:   # both workers connected to the broker before the run starts
        processes.wait_for(f"the Celery worker {host}",
                           lambda host=host: "ready." in processes.started[host][1].read_text(errors="replace"),
                           180)
    started = time.monotonic() - begin
    api(base, f"/api/v2/dags/{DAG_ID}", {"is_paused": False}, method="PATCH")
    run_id = api(base, f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": CONF})["dag_run_id"]

    def finished():
        state = api(base, f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None

    state = processes.wait_for("the DAG run", finished, 600)
    ran = time.monotonic() - begin - started
    instances = api(base, f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
    placed = sorted((t["task_id"], t["map_index"], t["state"], t["queue"], t["hostname"]) for t in instances)
    print(json.dumps(placed))   # shown with -s: which task ran where
    print(json.dumps({t["task_id"]: t["duration"] for t in instances}), f"started {started:.0f} s, ran {ran:.0f} s")
    assert state == "success", (placed, processes.tails())
    assert {t["task_id"] for t in instances if t["state"] == "success"} >= ROUTED | {"configure", "table1"}, placed
    for task_id, map_index, task_state, queue, hostname in placed:
        host = "gpu-worker" if task_id in ROUTED else "default-worker"
        assert task_state in ("success", "skipped"), (task_id, placed)
        # every task was picked up by a worker (one that raised AirflowSkipException ran there too)
        assert (queue, hostname) == (WORKERS[host], host), (task_id, map_index, placed)
    assert json.loads((work / "runs/synthetic/vbpr-mrdib/seed1/metrics.json").read_text())["test"]
