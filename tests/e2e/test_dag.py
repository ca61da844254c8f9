"""The Airflow DAG (dags/mrdib_pipeline.py), parsed and run by Airflow (its command's rules without Airflow:
tests/unit/test_orchestrate.py; its workspace lock: tests/integration/test_workspace_lock.py).

The DAG as Airflow parses it; then a real `airflow dags test` of a
tiny configuration, and a real scheduler + dag processor + API server on 127.0.0.1, triggered
over REST with non-default parameters that must reach the MLflow runs. Both use a temporary
AIRFLOW_HOME and a temporary copy of the repository; servers are stopped by process id. The deployment
and its servers are fixtures of conftest.py, shared with test_ui_browser (the same UI in Chromium).
"""
import json
import sqlite3
import subprocess
import sys
import urllib.error
from contextlib import closing
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAG_ID = "mrdib_pipeline"
TASKS = ["configure", "download", "filter", "features", "validate", "graphs", "tune", "train",
         "references", "table1", "ablate", "report"]
DAG_TEST_CONF = {"backbones": ["vbpr"], "seeds": [1], "device": "cpu", "tune": False}
# Non-default values (but the dataset: the tiny configuration has one); the policy routes `train_queue`.
REST_CONF = {"datasets": ["synthetic"], "backbones": ["vbpr"], "seeds": [7], "device": "cpu", "tune": True,
             "n_trials": 2, "train_queue": "gpu"}


# --- the DAG, parsed by Airflow ----------------------------------------------------------------

INSPECT = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
seconds = time.perf_counter() - start
dag = bag.dags.get("mrdib_pipeline")
module = next(m for name, m in sys.modules.items() if name.endswith("mrdib_pipeline"))  # DagBag's import
print(json.dumps({"stages": dict(module.BEFORE + module.PER_BACKBONE + module.AFTER),
    "errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags),
    "seconds": seconds, "tags": sorted(dag.tags), "max_active_runs": dag.max_active_runs,
    "params": {k: dag.params.get_param(k).value for k in dag.params},
    "schema": {k: dag.params.get_param(k).schema for k in dag.params},
    "tasks": {t.task_id: {"upstream": sorted(t.upstream_task_ids), "retries": t.retries,
        "backoff": t.retry_exponential_backoff, "mapped": type(t).__name__.endswith("MappedOperator"),
        "max_active": t.max_active_tis_per_dag} for t in dag.tasks}}))
"""


@pytest.fixture(scope="module")
def dag_info(tmp_path_factory, airflow_env):
    home = tmp_path_factory.mktemp("airflow-parse")
    result = subprocess.run([sys.executable, "-c", INSPECT, str(REPO / "dags")], capture_output=True, text=True,
                            env=airflow_env(home, REPO), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_dag_parses_fast_with_tags_retries_and_the_stage_graph(dag_info):
    assert dag_info["errors"] == {} and dag_info["dags"] == [DAG_ID]
    assert dag_info["seconds"] < 1.0 and dag_info["tags"] and dag_info["max_active_runs"] == 1
    tasks = dag_info["tasks"]
    assert sorted(tasks) == sorted(TASKS)
    assert all(t["retries"] >= 2 and t["backoff"] for t in tasks.values())
    for before, after in zip(TASKS, TASKS[1:]):
        assert before in tasks[after]["upstream"], (before, after)
    per_backbone = {name for name, t in tasks.items() if t["mapped"]}
    assert per_backbone == {"graphs", "tune", "train"}
    assert all(tasks[name]["max_active"] == 1 and "configure" in tasks[name]["upstream"] for name in per_backbone)


def test_every_dvc_stage_belongs_to_a_task(dag_info):
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    covered = {pattern.split("@")[0] for patterns in dag_info["stages"].values() for pattern in patterns}
    assert covered == set(stages), "dvc.yaml's stages and the DAG's lists in dags/mrdib_pipeline.py differ"


def test_form_choices_and_defaults_match_the_project(dag_info):
    from config.backbones import BACKBONES

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    schema, defaults = dag_info["schema"], dag_info["params"]
    assert schema["datasets"]["items"]["enum"] == sorted(params["datasets"])   # every dataset of params.yaml
    assert schema["backbones"]["items"]["enum"] == [b for b, cls in BACKBONES.items() if cls.modalities]
    assert schema["device"]["enum"] == ["auto", "cpu", "cuda"]
    pipeline = params["pipeline"]
    assert (defaults["datasets"], defaults["backbones"], defaults["seeds"]) == (
        pipeline["datasets"], pipeline["backbones"], pipeline["seeds"])
    assert defaults["device"] == params["train"]["device"] and defaults["n_trials"] == params["tune"]["n_trials"]
    assert defaults["tune"] == (params["tune"]["n_trials"] > 0)   # a run with the defaults tunes as `dvc repro` does
    assert defaults["variants"] == pipeline.get("variants", ["base", "mrdib"])


# --- real runs ---------------------------------------------------------------------------------

def test_airflow_dags_test_runs_the_pipeline(deployment):
    work, home, env = deployment
    result = subprocess.run([AIRFLOW, "dags", "test", DAG_ID, "-c", json.dumps(DAG_TEST_CONF)],
                            env=env | {"MRDIB_TRACKING": "off"}, capture_output=True, text=True, timeout=600)
    log = result.stdout[-6000:] + result.stderr[-6000:]
    assert result.returncode == 0, log
    by_task = {}
    with closing(sqlite3.connect(home / "airflow.db")) as db:   # the CLI's listings print log lines too
        (run_id,) = db.execute("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC", (DAG_ID,)).fetchone()
        for task_id, state in db.execute("SELECT task_id, state FROM task_instance WHERE run_id = ?", (run_id,)):
            by_task.setdefault(task_id, set()).add(state)
    assert by_task.get("train") == {"success"} and by_task.get("table1") == {"success"}, (by_task, log)
    assert set(by_task) == set(TASKS) and all(s <= {"success", "skipped"} for s in by_task.values()), by_task
    params = yaml.safe_load((work / "params.yaml").read_text())
    assert params["pipeline"]["backbones"] == ["vbpr"] and params["train"]["device"] == "cpu"
    assert json.loads((work / "runs/synthetic/vbpr-mrdib/seed1/metrics.json").read_text())["test"]
    assert (work / "reports/table1.md").exists()


@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")  # inside mlflow's sqlalchemy store
def test_rest_trigger_with_parameters_reaches_the_mlflow_runs(deployment, servers, api, wait_for):
    work, home, env = deployment
    base, started = servers
    wait_for("the API server", lambda: api(base, "/api/v2/monitor/health"), 120, started)
    wait_for("the DAG to be parsed", lambda: api(base, f"/api/v2/dags/{DAG_ID}"), 120, started)
    api(base, f"/api/v2/dags/{DAG_ID}", {"is_paused": False}, method="PATCH")  # paused if `dags test` made it
    with pytest.raises(urllib.error.HTTPError) as refused:   # the form's schema is enforced
        api(base, f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {"backbones": ["nope"]}})
    assert refused.value.code == 400
    run = api(base, f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": REST_CONF})
    run_id = run["dag_run_id"]

    def finished():
        state = api(base, f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None

    state = wait_for("the DAG run", finished, 540, started)
    instances = api(base, f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
    assert state == "success", [(t["task_id"], t["map_index"], t["state"]) for t in instances]
    assert {t["queue"] for t in instances if t["task_id"] == "train"} == {"gpu"}   # routed by the policy
    assert yaml.safe_load((work / "params.yaml").read_text())["tune"]["n_trials"] == 2

    import mlflow

    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.airflow_run_id = '{run_id}'")
    assert runs, f"no MLflow run tagged airflow_run_id={run_id} (pipeline/tracking.py records MRDIB_AIRFLOW_RUN_ID)"
    tags = [found.data.tags for found in runs]
    for tag in tags:   # every run of this DAG run: its parameters, as triggered
        recorded = json.loads(tag["airflow_params"])
        assert {key: recorded.get(key) for key in REST_CONF} == REST_CONF and tag["device"] == "cpu", tag
    references = yaml.safe_load((work / "params.yaml").read_text())["pipeline"]["references"]
    trained = {(t["backbone"], t["variant"], t["seed"]) for t in tags
               if t["stage"] == "train" and t["backbone"] not in references and not t.get("ablation")}
    assert trained == {("vbpr", "base", "7"), ("vbpr", "mrdib", "7")}, trained
    trials = [t for t in tags if t["stage"] == "tune" and "mlflow.parentRunId" in t]
    # equal budgets: one study per variant, each with the triggered number of trials
    n_trials = REST_CONF["n_trials"]
    assert sorted(t["variant"] for t in trials) == ["base"] * n_trials + ["mrdib"] * n_trials, trials
    assert {t["backbone"] for t in trials} == {"vbpr"}
