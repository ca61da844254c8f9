"""Airflow cluster policy: routes the MRdIB DAG's per-backbone tasks (graphs, tune, train) to the run's queue and pool.

The trigger form's `train_queue` (e.g. the queue GPU Celery workers listen on) and `train_pool`
are read from the DAG run's conf when the scheduler creates the task instances, so a run is sent
to GPU workers without changing any code. Install on the scheduler: copy this file to
$AIRFLOW_HOME/config/airflow_local_settings.py (or import this function from the one you have).
"""
DAG_ID = "mrdib_pipeline"
ROUTED_TASKS = {"graphs", "tune", "train"}  # the per-backbone tasks


def task_instance_mutation_hook(task_instance, dag_run=None):
    if dag_run is None or task_instance.dag_id != DAG_ID or task_instance.task_id not in ROUTED_TASKS:
        return
    conf = dag_run.conf or {}
    if conf.get("train_queue"):
        task_instance.queue = conf["train_queue"]
    if conf.get("train_pool"):
        task_instance.pool = conf["train_pool"]
