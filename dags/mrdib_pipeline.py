"""MRdIB pipeline: the DVC stages of dvc.yaml as Airflow tasks, chosen in the trigger form.

`configure` writes the form's choices into the workspace's params.yaml (as `dvc exp run -S`
would: the values stay in the working copy, `git diff params.yaml` shows them), then each task
runs `python -m tools.orchestrate stage PATTERN...`, i.e. `dvc repro --glob` on its stages:
download → filter → features → validate → graphs, tune and train (one task per backbone) →
references → table1 → ablate (and table2) → report. A stage that dvc.yaml does not have is a skipped task.
DVC's cache makes finished stages no-ops, so a retried or re-triggered task redoes only what is
missing. The MLflow runs of a DAG run carry its run id (tag `airflow_run_id`) and its parameters.

- Parameters -> params.yaml: datasets, backbones, seeds -> pipeline.*; device -> train.device;
  variants -> pipeline.variants; tune on -> tune.n_trials = n_trials, tune.backbones = backbones;
  tune off -> tune.n_trials = 0 (the tune stage keeps params.yaml's MRdIB weights).
- Workspace: Airflow Variable `mrdib_workspace`, else env `MRDIB_WORKSPACE`, else this
  repository. One run at a time, one DVC task at a time (a file lock in the workspace).
- GPU workers: `train_queue` / `train_pool` route the graphs, tune and train tasks of a run, through
  the cluster policy in dags/policy/airflow_local_settings.py (install it on the scheduler).
"""
from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

from airflow.sdk import Param, chain, dag, task

REPO = Path(__file__).resolve().parents[1]  # the DAGs folder is the repository's dags/ (README, Dockerfile)
sys.path.insert(0, str(REPO))
from config import sections  # noqa: E402
from config.backbones import MULTIMODAL  # noqa: E402  (light: pydantic and yaml, no torch)
from config.params import load_params  # noqa: E402

DAG_ID = "mrdib_pipeline"
# The form's choices and defaults come from the repository's params.yaml and config/: a dataset or a
# backbone added there is offered here without an edit.
DEFAULTS = load_params(REPO / "params.yaml")
DATASETS = sorted(DEFAULTS.datasets)
BACKBONES = MULTIMODAL
DEFAULT_BACKBONES = DEFAULTS.pipeline.backbones
VARIANTS = list(sections.VARIANTS)
# Task -> the DVC stages it reproduces (`dvc repro --glob`); {dataset}, {backbone} come from the run.
BEFORE = [("download", ["download@{dataset}"]), ("filter", ["filter@{dataset}"]),
          ("features", ["features@{dataset}"]), ("validate", ["validate@{dataset}"])]
PER_BACKBONE = [("graphs", ["graphs@{dataset}-{backbone}"]), ("tune", ["tune@{dataset}-{backbone}-*"]),
                ("train", ["train@{dataset}-{backbone}-*"])]
AFTER = [("references", ["reference@{dataset}-*"]), ("table1", ["table1"]),
         ("ablate", ["ablate@{dataset}-*", "table2"]),
         # reliance: every trained run's modality reliance; the sweep: its own synthetic data; probe: the latents
         # against the planted blocks; all read by the report
         ("report", ["reliance", "sweep@*", "sweep_table", "probe", "report"])]
NOTHING_TO_DO, REFUSED = 99, 2  # tools.orchestrate's exit codes: no stage matches; parameters refused


def choices(default: list, options: list, title: str, description: str) -> Param:
    return Param(default, type="array", items={"type": "string", "enum": options}, minItems=1,
                 uniqueItems=True, examples=options, title=title, description=description)


PARAMS = {
    "datasets": choices(DEFAULTS.pipeline.datasets, DATASETS, "Datasets", "names under `datasets:` in params.yaml"),
    "backbones": choices(DEFAULT_BACKBONES, BACKBONES, "Backbones", "multimodal backbones, one train task each"),
    "variants": choices(VARIANTS, VARIANTS, "Variants", "base backbone and/or backbone + MRdIB"),
    "seeds": Param(DEFAULTS.pipeline.seeds, type="array", items={"type": "integer", "minimum": 0},
                   minItems=1, uniqueItems=True, title="Seeds",
                   description="every model is trained once per seed (at least 5 for a claim; not params.yaml's "
                               "`seed`, which tunes)"),
    # the form's defaults are what `dvc repro` would do in the workspace: tune when params.yaml tunes
    "tune": Param(DEFAULTS.tune.n_trials > 0, type="boolean", title="Tune",
                  description="Optuna search for base and MRdIB of every backbone, equal budgets; off: "
                              "params.yaml's values for both (a budget of 0)"),
    "n_trials": Param(max(1, DEFAULTS.tune.n_trials), type="integer", minimum=1, maximum=1000, title="Optuna trials",
                      description="trials per dataset, backbone and variant, when tuning"),
    "device": Param(DEFAULTS.train.device, type="string", enum=["auto", "cpu", "cuda"], title="Device",
                    description="auto takes a GPU where the worker has one"),
    # nullable, default None: the trigger form treats an empty required string as missing and
    # disables its Trigger button
    "train_queue": Param(None, type=["null", "string"], title="Train queue",
                         description="executor queue of GPU workers for graphs/tune/train; empty: the default"),
    "train_pool": Param(None, type=["null", "string"], title="Train pool",
                        description="Airflow pool for graphs/tune/train; empty: the default pool"),
}
DEFAULT_ARGS = {
    "owner": "mrdib",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


def orchestrate(command: str, params, run_id: str, *args: str) -> int:
    """Run `python -m tools.orchestrate` in the workspace, its output into the task log."""
    import json
    import signal
    import subprocess
    import sys

    from airflow.sdk import Variable

    workspace = Variable.get("mrdib_workspace", default=None) or os.environ.get(
        "MRDIB_WORKSPACE", str(Path(__file__).resolve().parents[1]))
    conf = json.dumps({key: params[key] for key in PARAMS if key in params})
    cmd = [sys.executable, "-m", "tools.orchestrate", command, "--run-id", run_id, "--conf", conf, *args]
    print(f"[{workspace}] {' '.join(cmd)}", flush=True)
    process = subprocess.Popen(cmd, cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        for line in process.stdout:
            print(line, end="", flush=True)
        return process.wait()
    finally:
        if process.poll() is None:  # the task was killed or timed out: so is its DVC run, children included
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()


@task
def configure(params=None, run_id=None) -> list[str]:
    """Validate the run's parameters and write them into params.yaml; returns the backbones to map over."""
    from airflow.sdk.exceptions import AirflowFailException

    code = orchestrate("configure", params, run_id)
    if code == REFUSED:  # a retry would be refused again
        raise AirflowFailException("the run's parameters were refused (see the log above)")
    if code:
        raise RuntimeError(f"tools.orchestrate configure failed with exit code {code} (see the log above)")
    return list(params["backbones"])


@task(trigger_rule="none_failed")
def stage(patterns: list[str], backbone: str | None = None, params=None, run_id=None, ti=None) -> None:
    """`dvc repro --glob` the stages named by `patterns`; skipped when dvc.yaml has none of them."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    if backbone and params["train_queue"] and ti.queue != params["train_queue"]:
        raise AirflowFailException(f"this task runs on queue {ti.queue!r}, not {params['train_queue']!r}: "
                                   "install dags/policy/airflow_local_settings.py on the scheduler")
    code = orchestrate("stage", params, run_id, *patterns, *(["--backbone", backbone] if backbone else []))
    if code == NOTHING_TO_DO:
        raise AirflowSkipException(f"dvc.yaml has no stage matching {patterns}")
    if code == REFUSED:
        raise AirflowFailException("the run's parameters were refused (see the log above)")
    if code:
        raise RuntimeError(f"tools.orchestrate stage failed with exit code {code} (see the log above)")


@dag(dag_id=DAG_ID, schedule=None, catchup=False, max_active_runs=1, params=PARAMS, default_args=DEFAULT_ARGS,
     tags=["mrdib", "dvc", "recommendation"], doc_md=__doc__)
def mrdib_pipeline():
    backbones = configure()
    before = [stage.override(task_id=name)(patterns) for name, patterns in BEFORE]
    per_backbone = [stage.override(task_id=name, max_active_tis_per_dag=1).partial(patterns=patterns)
                    .expand(backbone=backbones) for name, patterns in PER_BACKBONE]
    after = [stage.override(task_id=name)(patterns) for name, patterns in AFTER]
    chain(backbones, *before, *per_backbone, *after)


mrdib_pipeline()
