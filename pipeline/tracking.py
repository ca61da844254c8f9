"""MLflow tracking that never breaks training: one run per trained model, its registry version, `champion`.

Where (the `tracking:` section of params.yaml):
- tracking_uri `sqlite:///mlruns/mlflow.db`, artifacts under `mlruns/artifacts/<experiment>`; one
  experiment per dataset, named after it. Relative paths resolve against the repository root
  (the folder holding tasks/), whatever the working directory.
- MLFLOW_TRACKING_URI in the environment overrides the URI (the DAG and the tests point
  elsewhere); a relative artifact folder then sits next to that sqlite file, so nothing lands in
  the repository. MRDIB_TRACKING=off turns tracking off whatever params.yaml says.

A training run holds the resolved parameters, tags (backbone, variant, dataset, seed, stage,
standin_features yes/no, device, git commit, dvc_data_version = md5 of the dataset's .inter file,
the value DVC 3 records for it in dvc.lock; airflow_run_id / airflow_params inside a DAG run),
per-epoch loss terms (`loss/<term>`) and validation metrics (`valid/recall_at_20`), the final
`valid_*` / `test_*` metrics, the learning curve, the model (pickled, wrapped in `Scorer`, with
its signature: user ids -> scores of every item) and its registered version in
`<dataset>-<backbone>`, whose alias `champion` names the version with the best validation score.
Tune trials (tasks/tune.py) are nested runs with the same tags, no test metric and no model.

Failure: every MLflow call goes through `Tracker._call`. The first error (store unreachable,
locked, full disk) logs one warning, the store is not tried again by this process, and training
goes on; tasks.train writes metrics.json before the final MLflow calls. mlflow is imported inside
functions: the import alone costs seconds.

Background start: a training run (`start_training_run(background=True)`, what tasks.train does)
imports MLflow, opens the store, creates the run and logs its parameters in a thread, while the
model trains its first epoch (~1.6 s of imports and store set-up on these machines, off the path to
the first epoch). Every other call waits for that thread first, then runs in the caller's thread,
in order: the run holds exactly what a foreground start gives it (tests/integration/test_tracking.py).
"""
from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from config.metrics import metric_key
from config.sections import TrackingConfig

log = logging.getLogger("pipeline.tracking")
REPO = Path(__file__).resolve().parents[1]
CHAMPION = "champion"
SQLITE = "sqlite:///"
_BROKEN: set[str] = set()   # stores that failed in this process: warned once, not tried again
# Set by tools/orchestrate.py for the stages of a DAG run: its run id and its trigger parameters (JSON).
AIRFLOW_TAGS = {"airflow_run_id": "MRDIB_AIRFLOW_RUN_ID", "airflow_params": "MRDIB_RUN_PARAMS"}


def tracking_enabled(cfg: TrackingConfig) -> bool:
    return cfg.enabled and os.environ.get("MRDIB_TRACKING", "").lower() not in ("0", "off", "false", "no")


def absolute_sqlite(uri: str, base: Path = REPO) -> str:
    """`sqlite:///rel/x.db` -> `sqlite:////<base>/rel/x.db`, its folder created; other URIs unchanged."""
    if not uri.startswith(SQLITE) or uri == SQLITE + ":memory:":
        return uri
    path = Path(uri[len(SQLITE):])
    path = path if path.is_absolute() else base / path
    path.parent.mkdir(parents=True, exist_ok=True)
    return SQLITE + str(path.resolve())


def resolve_store(cfg: TrackingConfig) -> tuple[str, str]:
    """(tracking URI, artifact root URI) by the rules of the module docstring."""
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    uri = absolute_sqlite(env_uri or cfg.tracking_uri)
    artifacts = cfg.artifact_location
    if "://" in artifacts:
        return uri, artifacts
    path = Path(artifacts)
    if not path.is_absolute():
        beside_db = env_uri and uri.startswith(SQLITE)
        path = Path(uri[len(SQLITE):]).parent / path.name if beside_db else REPO / path
    return uri, path.resolve().as_uri()


class Tracker:
    """One MLflow run (or none: every method is then a no-op). Every call is failure-safe."""

    def __init__(self, store: str | None = None):
        self.store = store      # the configured URI: a store that failed is not tried again
        self.uri = self.client = self.run_id = self.experiment_id = None
        self._starting: threading.Thread | None = None  # a background start not yet waited for

    @property
    def active(self) -> bool:
        self.wait()
        return self.run_id is not None and self.store not in _BROKEN

    def wait(self) -> None:
        """Block until a background start has finished (its own thread never waits for itself)."""
        starting = self._starting
        if starting is not None and starting is not threading.current_thread():
            starting.join()
            self._starting = None

    def _call(self, what: str, fn: Callable, *args, **kwargs):
        if self.store in _BROKEN:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # any error: tracking must never stop training
            _BROKEN.add(self.store)
            log.warning("MLflow: could not %s at %s (%s: %s); tracking is off for this process, "
                        "training goes on", what, self.uri or self.store, type(err).__name__, str(err)[:300])
            return None

    @classmethod
    def start(cls, cfg: TrackingConfig, experiment: str, run_name: str, tags: dict[str, str],
              parent: Tracker | None = None, reuse: dict[str, str] | None = None,
              supersede: dict[str, str] | None = None, then: Callable[[Tracker], None] | None = None,
              background: bool = False) -> Tracker:
        """A new run in `experiment`; `reuse`: tags of a run to continue instead (a resumed study);
        `supersede`: tags of runs left RUNNING by a killed process, marked KILLED first; `then`: what
        to log right after (its parameters). background: do all that in a thread (module docstring)."""
        if not tracking_enabled(cfg):
            return cls()
        tracker = cls(os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking_uri)

        def begin() -> None:
            tracker._call("start a run", tracker._begin, cfg, experiment, run_name, tags, parent, reuse, supersede)
            if then is not None:
                then(tracker)

        if background:
            tracker._starting = threading.Thread(target=begin, name="mlflow-start", daemon=True)
            tracker._starting.start()
        else:
            begin()
        return tracker

    def _begin(self, cfg, experiment, run_name, tags, parent, reuse, supersede) -> None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # an unreachable server fails fast
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow import MlflowClient

        self.uri, artifacts = resolve_store(cfg)
        client = MlflowClient(tracking_uri=self.uri)
        found = client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found else client.create_experiment(
            experiment, artifact_location=f"{artifacts.rstrip('/')}/{experiment}")
        if found and not found.artifact_location.startswith(artifacts.rstrip("/") + "/"):
            log.warning("MLflow: experiment %r keeps its artifacts in %s, outside this store's %s (a copied or "
                        "moved store?); `python -m tools.relocate --store <store folder>` points it back",
                        experiment, found.artifact_location, artifacts)
        if parent is not None and parent.active:
            tags = tags | {"mlflow.parentRunId": parent.run_id}
        previous = client.search_runs([exp_id], tag_filter(reuse), max_results=1) if reuse else []
        if supersede:
            for run in client.search_runs([exp_id], tag_filter(supersede) + " and attributes.status = 'RUNNING'"):
                client.set_terminated(run.info.run_id, "KILLED")
        if previous:  # a resumed study: its run continues, with this invocation's tags
            from mlflow.entities import RunTag

            run_id = previous[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items() if not k.startswith("mlflow.")])
        else:
            run_id = client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
        self.client, self.experiment_id, self.run_id = client, exp_id, run_id

    # -- logging -----------------------------------------------------------------------------
    def log_params(self, values: dict[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in values.items()]
        for start in range(0, len(items), 100):  # MLflow takes 100 params per batch
            self._call("log params", self._batch, params=items[start:start + 100])

    def log_metrics(self, values: dict[str, float], step: int = 0) -> None:
        if not self.active:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_key(k), float(v), now, step) for k, v in values.items()]
        self._call("log metrics", self._batch, metrics=items)

    def log_epoch(self, epoch: int, record: dict) -> None:
        """The Trainer's on_epoch: loss/<term>, valid/<metric> and the epoch's seconds, at step = epoch."""
        self.log_metrics({("epoch_seconds" if k == "seconds" else k): v for k, v in record.items() if k != "epoch"},
                         step=epoch)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.active:
            from mlflow.entities import RunTag

            self._call("set tags", self._batch, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def _batch(self, **items) -> None:
        self.client.log_batch(self.run_id, **items)

    def log_figure(self, figure, name: str) -> None:
        if self.active:
            self._call("log a figure", self.client.log_figure, self.run_id, figure, name)

    def log_dict(self, payload, name: str) -> None:
        if self.active:
            self._call("log a file", self.client.log_dict, self.run_id, payload, name)

    def log_artifact(self, path: Path) -> None:
        if self.active and Path(path).exists():
            self._call("log a file", self.client.log_artifact, self.run_id, str(path))

    def log_model(self, model: torch.nn.Module) -> str | None:
        """The model, pickled (torch.export fails on sparse tensors), with its signature; its URI."""
        return self._call("log the model", self._log_model, model) if self.active else None

    def _log_model(self, model) -> str:
        import mlflow
        import mlflow.pytorch
        from mlflow.models import infer_signature

        scorer = Scorer(model).eval()
        users = torch.arange(min(2, model.ctx.n_users), device=model.ctx.device)
        signature = infer_signature(users.cpu().numpy(), scorer(users).cpu().numpy())  # [b] int64 -> [b, n_items]
        mlflow.set_tracking_uri(self.uri)
        quiet = logging.getLogger("mlflow.pytorch")  # its warning about pickle: chosen knowingly (sparse tensors)
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with mlflow.start_run(run_id=self.run_id):
                info = mlflow.pytorch.log_model(
                    scorer, name="model", serialization_format="pickle", signature=signature,
                    code_paths=model_code(), pip_requirements=requirements())
        finally:
            quiet.setLevel(level)
        return info.model_uri

    def register(self, model_uri: str, name: str, tags: dict[str, str], metric: str, score: float) -> str | None:
        """A new version of `name` (tags + the validation score); moves `champion` if it is now the best."""
        if not self.active:
            return None
        return self._call("register the model", self._register, model_uri, name, tags, metric, score)

    def _register(self, model_uri, name, tags, metric, score) -> str:
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        tags = {k: str(v) for k, v in tags.items()} | {"valid_metric": metric, "valid_score": repr(float(score)),
                                                      "run_id": self.run_id}
        version = mlflow.register_model(model_uri, name, tags=tags).version
        update_champion(self.client, name, metric)
        return str(version)

    def end(self, status: str = "FINISHED") -> None:
        if self.active:
            self._call("end the run", self.client.set_terminated, self.run_id, status)


def tag_filter(tags: dict[str, str]) -> str:
    return " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())


# The packages a pickled model's classes live in (the backbone, its config, Scorer): logged with every
# model, so that `mlflow.pyfunc.load_model("models:/<name>@champion")` works outside this repository.
MODEL_CODE = ("config", "models", "pipeline")


def model_code() -> list[str]:
    """The folders of MODEL_CODE, where they are imported from."""
    from importlib import import_module

    return [str(Path(import_module(package).__file__).parent) for package in MODEL_CODE]


def requirements() -> list[str]:
    """The pinned libraries those packages import at load time."""
    from importlib.metadata import version

    return [f"torch=={torch.__version__.split('+')[0]}"] + [
        f"{name}=={version(name)}" for name in ("numpy", "scipy", "pandas", "pydantic", "pyyaml")]


class Scorer(torch.nn.Module):
    """What the registry serves: user ids [b] (int64) -> scores of every item [b, n_items]."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    @torch.no_grad()
    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return self.model.full_scores(torch.as_tensor(users, device=self.model.ctx.device).long())


def update_champion(client, name: str, metric: str) -> tuple[str, bool]:
    """Point `champion` at the version with the best validation `metric` (ties: the older stays).

    Returns (champion version, whether it moved)."""
    scored = [(float(v.tags["valid_score"]), -int(v.version), str(v.version))
              for v in client.search_model_versions(f"name='{name}'")
              if v.tags.get("valid_metric") == metric and "valid_score" in v.tags]
    if not scored:
        return "", False
    best_score, _, best = max(scored)
    current = client.get_registered_model(name).aliases.get(CHAMPION)
    current_score = next((s for s, _, v in scored if v == str(current)), None)
    if current is not None and current_score is not None and current_score >= best_score:
        return str(current), False
    client.set_registered_model_alias(name, CHAMPION, best)
    log.info("registry %s: %s -> version %s (valid %s %.4f)", name, CHAMPION, best, metric, best_score)
    return best, True


# -- what a training run records --------------------------------------------------------------
@lru_cache(maxsize=1)
def git_commit() -> tuple[str, str]:
    """(HEAD commit, "yes"/"no" for uncommitted changes to tracked files); "unknown" without git.
    MRDIB_GIT_COMMIT, where set, is the commit instead of HEAD: the Docker image sets it to the commit
    it was built from (its own repository is a one-commit snapshot whose hash names nothing upstream);
    the dirty flag stays the local repository's (there: what changed in the container)."""
    source = os.environ.get("MRDIB_GIT_COMMIT", "").strip()
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return source or "unknown", "unknown"
    if head.returncode != 0:
        return source or "unknown", "unknown"
    return source or head.stdout.strip(), "yes" if dirty.stdout.strip() else "no"


def file_md5(path: Path) -> str:
    stat = Path(path).stat()
    return _md5(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=64)
def _md5(path: str, mtime_ns: int, size: int) -> str:  # cached per file version: tune trials ask often
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_version(data_dir: Path) -> dict[str, str]:
    """dvc_data_version: md5 of the .inter file (= its md5 in dvc.lock under DVC 3); md5 of each feature file."""
    inter = sorted(Path(data_dir).glob("*.inter"))
    tags = {"dvc_data_version": file_md5(inter[0]) if len(inter) == 1 else "unknown"}
    for feature in sorted(Path(data_dir).glob("*_feat.npy")):
        tags[f"md5.{feature.name}"] = file_md5(feature)
    return tags


def run_tags(*, dataset: str, data_dir: Path, backbone: str, variant: str, seed: int, standin: list[str],
             device: Any, stage: str) -> dict[str, str]:
    commit, dirty = git_commit()
    airflow = {tag: os.environ[var] for tag, var in AIRFLOW_TAGS.items() if os.environ.get(var)}
    return airflow | {"backbone": backbone, "variant": variant, "dataset": dataset, "seed": str(seed), "stage": stage,
            "standin_features": "yes" if standin else "no", "standin_modalities": ",".join(standin),
            "device": str(device), "git_commit": commit, "mlflow.source.git.commit": commit, "git_dirty": dirty,
            "data_dir": str(data_dir), **data_version(data_dir)}


def flatten(prefix: str, values: dict) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten(name, value) if isinstance(value, dict) else {name: value})
    return out


def resolved_params(params, backbone: str, variant: str) -> dict[str, Any]:
    """What a run of `backbone`/`variant` reads from params (after dataset overrides and tuned values)."""
    flat = {"seed": params.seed, "backbone": backbone, "variant": variant,
            **flatten("data", params.data.model_dump()), **flatten("train", params.train.model_dump()),
            **flatten(f"backbones.{backbone}", params.backbone_config(backbone).model_dump())}
    if variant == "mrdib":
        flat.update(flatten("mrdib", params.mrdib.model_dump()))
    return flat


def final_metrics(metrics: dict) -> dict[str, float]:
    """valid_recall_at_20 ... test_ndcg_at_50, best_epoch, seconds_per_epoch, epochs_run."""
    out = {f"{split}_{metric_key(k)}": v for split in ("valid", "test") for k, v in metrics.get(split, {}).items()}
    return out | {k: metrics[k] for k in ("best_epoch", "seconds_per_epoch", "epochs_run") if k in metrics}


def learning_curve(history: list[dict], valid_metric: str):
    """Loss terms and the validation metric per epoch, the best epoch marked (a matplotlib Figure)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    losses, valid = figure.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    for key in sorted({k for h in history for k in h if k.startswith("loss/")}):
        losses.plot(epochs, [h.get(key, np.nan) for h in history], label=key[5:])
    losses.set(xlabel="epoch", ylabel="mean loss term", title="training loss terms")
    losses.legend(fontsize=8)
    scores = [h.get(f"valid/{valid_metric}", np.nan) for h in history]
    valid.plot(epochs, scores, color="tab:green")
    if history:
        best = int(np.nanargmax(scores))
        valid.axvline(epochs[best], color="grey", linestyle="--", label=f"best epoch {epochs[best]}")
        valid.legend(fontsize=8)
    valid.set(xlabel="epoch", ylabel=valid_metric, title=f"validation {valid_metric}")
    return figure


def start_training_run(params, *, dataset: str, data_dir: Path, backbone: str, variant: str, device: Any,
                       standin: list[str], stage: str = "train", run_name: str | None = None,
                       parent: Tracker | None = None, extra_params: dict | None = None,
                       extra_tags: dict | None = None, supersede: dict | None = None,
                       background: bool = False) -> Tracker:
    """A run holding the resolved params and tags; its log_epoch is the Trainer's on_epoch.
    background: start it in a thread (module docstring)."""
    tags = run_tags(dataset=dataset, data_dir=data_dir, backbone=backbone, variant=variant, seed=params.seed,
                    standin=standin, device=device, stage=stage) | (extra_tags or {}) | (supersede or {})
    label = "-".join(filter(None, [backbone, variant, tags.get("ablation")]))  # an ablation is named as one
    logged = resolved_params(params, backbone, variant) | (extra_params or {})
    snapshot = params.model_dump(mode="json")

    def log_params(tracker: Tracker) -> None:
        tracker.log_params(logged)
        tracker.log_dict(snapshot, "params.json")

    return Tracker.start(params.tracking, dataset, run_name or f"{label}-seed{params.seed}", tags,
                         parent=parent, supersede=supersede, then=log_params, background=background)


def finish_training_run(tracker: Tracker, params, metrics: dict, history: list[dict], model,
                        tags: dict | None = None) -> None:
    """Final metrics, learning curve, model + registry version (`<dataset>-<backbone>`, with `tags`; none for
    an ablation), run FINISHED."""
    if not tracker.active:
        return
    tracker.log_metrics(final_metrics(metrics))
    figure = tracker._call("draw the learning curve", learning_curve, history, params.train.valid_metric)
    tracker.log_figure(figure, "learning_curve.png")
    tracker.log_dict(history, "history.json")
    tracker.log_dict(metrics, "metrics.json")
    if params.tracking.log_model:
        uri = tracker.log_model(model)
        # an ablation is a diagnostic, not a model to serve: it never competes for `champion`
        if uri and params.tracking.register_models and not (tags or {}).get("ablation"):
            metric = params.train.valid_metric
            tracker.register(uri, f"{metrics['dataset']}-{metrics['backbone']}",
                             {"variant": metrics["variant"], "seed": metrics["seed"], "dataset": metrics["dataset"],
                              "backbone": metrics["backbone"], "alphas": metrics.get("alphas")} | (tags or {}),
                             metric, metrics["valid"][metric])
    tracker.end("FINISHED")
