"""Tuning one variant of one backbone with Optuna, on validation only (the tune stage, tasks/tune.py,
says what the study is and writes; benchmarks/tune_vs_grid.py reuses TrialRunner and Objective)."""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from config.metrics import metric_key
from config.params import Params
from models.data import Dataset, load_dataset
from models.evaluation import Evaluator
from models.graph import load_graphs
from models.registry import get_backbone
from models.trainer import NonFiniteLossError, Trainer, pick_device, seed_everything
from pipeline.errors import EXIT_USAGE, Refusal
from pipeline.io import write_json
from pipeline.tracking import (
    Tracker,
    absolute_sqlite,
    data_version,
    flatten,
    resolved_params,
    run_tags,
    start_training_run,
)
from pipeline.training import build_model, model_context, train_settings, with_values

log = logging.getLogger("pipeline.tuning")
ALPHAS = ("alpha1", "alpha2", "alpha3")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class TrialRunner:
    """Trains one variant of one backbone for given values, scored on the validation split only.

    Shared by the study and benchmarks/tune_vs_grid.py. The dataset holds no test rows."""

    params: Params                 # dataset overrides applied, epochs capped at tune.epochs, no progress bar
    dataset: Dataset
    data_dir: Path
    backbone: str
    variant: str
    device: torch.device
    graphs: dict                   # the backbone's fixed graphs, built (or read) once for every trial
    standin: list[str]

    @classmethod
    def load(cls, params: Params, data_dir: Path, backbone: str, variant: str = "mrdib",
             graphs_file: Path | None = None) -> TrialRunner:
        dataset = load_dataset(data_dir, standin=params.data.standin_features, seed=params.seed)
        dataset = replace(dataset, test=dataset.test[:0])  # the tuner never sees the test split
        params = params.for_dataset(dataset.name, backbone)
        params = with_values(params, {"train.progress": False} |
                             ({"train.epochs": params.tune.epochs} if params.tune.epochs else {}))
        device = pick_device(params.train.device)
        model_class, config = get_backbone(backbone), params.backbone_config(backbone)
        if variant == "mrdib" and not model_class.modalities:
            raise Refusal(f"backbone {backbone!r} uses no modality features: there are no MRdIB weights to tune",
                          EXIT_USAGE)
        ctx = model_context(params, dataset, "base", device)
        graphs = load_graphs(graphs_file, model_class.graph_key(ctx, config)) if graphs_file \
            else model_class.build_graphs(ctx, config)
        standin = [m for m in dataset.standin_features if m in model_class.modalities]
        return cls(params, dataset, Path(data_dir), backbone, variant, device, graphs, standin)

    def fit(self, params: Params, on_epoch: Callable[[int, dict, float], None] | None = None) -> Trainer:
        """Train (early stopping on validation, at most params.train.epochs); on_epoch(epoch, record, best)."""
        seed_everything(params.seed)  # every trial starts from the same initialisation and negatives
        model = build_model(params, self.dataset, self.backbone, self.variant, self.device, self.graphs)
        evaluator = Evaluator(self.dataset.n_users, self.dataset.n_items, self.dataset.train,
                              {"valid": self.dataset.valid}, batch_size=params.train.eval_batch_size,
                              device=self.device)
        with tempfile.TemporaryDirectory(prefix="mrdib-trial-") as folder:
            trainer = Trainer(model, self.dataset.train, evaluator, train_settings(params), Path(folder), params.seed)
            if on_epoch is not None:
                trainer.on_epoch = lambda epoch, record: on_epoch(epoch, record, trainer.state.best_score)
            trainer.run_epochs()
        return trainer


def regulariser(params: Params, backbone: str) -> tuple[str, float, float]:
    """The L2 weight tuned for a backbone and its range: its own reg_weight in [reg_low, reg_high], else
    Adam's weight decay in [weight_decay_low, weight_decay_high].

    Two ranges because the two act on different scales: reg_weight multiplies a penalty on the batch's
    vectors, while weight decay pulls every parameter toward 0 at every step (on MovieLens, SOIL with a
    decay of 5e-4 kept a BPR loss of ln 2: every embedding held near zero)."""
    cfg = params.tune
    if "reg_weight" in get_backbone(backbone).Config.model_fields:
        return f"backbones.{backbone}.reg_weight", cfg.reg_low, cfg.reg_high
    return "train.weight_decay", cfg.weight_decay_low, cfg.weight_decay_high


def search_space(params: Params, backbone: str, variant: str = "mrdib") -> dict[str, tuple[str, float, float]]:
    """Optuna name -> (params key, low, high), every one log-uniform.

    The shared part (lr, regularisation) is the same for both variants; mrdib adds the alphas."""
    cfg = params.tune
    space = {}
    if cfg.tune_lr:
        space["lr"] = ("train.lr", cfg.lr_low, cfg.lr_high)
    if cfg.tune_reg:
        key, low, high = regulariser(params, backbone)
        space[key.rsplit(".", 1)[1]] = (key, low, high)   # reg_weight or weight_decay: logs say which
    if variant == "mrdib":
        space |= {a: (f"mrdib.{a}", cfg.alpha_low, cfg.alpha_high) for a in ALPHAS}
    if not space:
        raise Refusal(f"tune: nothing to tune for {backbone}/{variant} (tune.tune_lr and tune.tune_reg are off)",
                      EXIT_USAGE)
    return space


def study_name(runner: TrialRunner) -> str:
    """<dataset>-<backbone>-<key of the search, the fixed params and the data>."""
    text = json.dumps([search_settings(runner), data_version(runner.data_dir)], sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{runner.dataset.name}-{runner.backbone}-{runner.variant}-{digest}"


def search_settings(runner: TrialRunner) -> dict:
    """What a study's trials depend on: tune.* but n_trials / timeout_s / backbones / storage, fixed params."""
    space = search_space(runner.params, runner.backbone, runner.variant)
    fixed = {k: v for k, v in resolved_params(runner.params, runner.backbone, runner.variant).items()
             if k not in {key for key, _, _ in space.values()}}
    tune = runner.params.tune.model_dump(exclude={"n_trials", "timeout_s", "backbones", "storage"})
    return flatten("tune", tune) | fixed


class Objective:
    """One trial: suggest, train with per-epoch report/prune, log a nested MLflow run; returns best valid."""

    def __init__(self, runner: TrialRunner, study: str, parent: Tracker | None = None, track: bool = True):
        self.runner, self.study, self.parent, self.track = runner, study, parent, track
        self.space = search_space(runner.params, runner.backbone, runner.variant)

    def __call__(self, trial: optuna.Trial) -> float:
        values = {key: trial.suggest_float(name, low, high, log=True) for name, (key, low, high) in self.space.items()}
        params = with_values(self.runner.params, values)
        tracker = start_training_run(
            params, dataset=self.runner.dataset.name, data_dir=self.runner.data_dir, backbone=self.runner.backbone,
            variant=self.runner.variant, device=self.runner.device, standin=self.runner.standin, stage="tune",
            run_name=f"{self.study}-trial{trial.number}", parent=self.parent,
            extra_tags={"optuna_study": self.study, "optuna_role": "trial", "trial_number": str(trial.number)}) \
            if self.track else Tracker()
        metric = params.train.valid_metric
        started = time.perf_counter()

        def on_epoch(epoch: int, record: dict, best: float) -> None:
            tracker.log_epoch(epoch, record)
            trial.set_user_attr("epochs_run", epoch)
            trial.set_user_attr("best_so_far", best)
            trial.report(best, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}: {metric} {best:.4f} below the median")

        state = "FAIL"
        try:
            trainer = self.runner.fit(params, on_epoch)
            state = "COMPLETE"
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - started)
            best = trial.user_attrs.get("best_so_far")
            if best is not None:
                tracker.log_metrics({f"valid_{metric_key(metric)}": best})
            tracker.set_tags({"trial_state": state})
            tracker.end("FAILED" if state == "FAIL" else "FINISHED")
        trial.set_user_attr("best_epoch", trainer.state.best_epoch)
        return trainer.state.best_score


def open_study(params: Params, name: str) -> optuna.Study:
    """The study in tune.storage, created or resumed; a trial a kill left RUNNING is failed and retried."""
    cfg = params.tune
    storage = optuna.storages.RDBStorage(absolute_sqlite(cfg.storage))
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=cfg.pruner_startup_trials,
                                           n_warmup_steps=cfg.pruner_warmup_epochs))
    # A resumed study continues the sampler's sequence instead of restarting it (which would repeat
    # trial 0's parameters): the seed moves on by the number of trials already in the storage.
    study.sampler = optuna.samplers.TPESampler(seed=params.seed + len(study.get_trials(deepcopy=False)),
                                               n_startup_trials=cfg.startup_trials)
    with warnings.catch_warnings():  # "experimental" since optuna 3.2, stable in use: not worth a line per study
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([f"valid {params.train.valid_metric}"])  # not "Objective 0" in the dashboard
    # One worker per study (DVC runs one stage at a time): a RUNNING trial here was killed.
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        log.warning("trial %d of %s was interrupted: marked FAIL, its parameters are tried again", trial.number, name)
    return study


def count(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {s.name.lower(): sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED,
                                                                         TrialState.FAIL)}


def progress(total: int, metric: str) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """A log line per finished trial: state, value, parameters, epochs, seconds, best so far."""
    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        finished = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
        value = trial.value if trial.value is not None else trial.user_attrs.get("best_so_far", float("nan"))
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = max(complete, key=lambda t: t.value) if complete else None
        log.info("trial %d %-8s %s %.4f  %s  epochs %s  %.1fs  | best %s  [%d/%d finished]", trial.number,
                 trial.state.name, metric, value, " ".join(f"{k} {v:.2e}" for k, v in trial.params.items()),
                 trial.user_attrs.get("epochs_run", 0), trial.user_attrs.get("seconds", 0.0),
                 f"{best.value:.4f} (trial {best.number})" if best else "-", finished, total)
    return report


def tune(params: Params, data_dir: Path, backbone: str, out: Path, graphs_file: Path | None = None,
         variant: str = "mrdib") -> dict:
    """Run (or resume) the study; write OUT and its plots; returns OUT's content."""
    runner = TrialRunner.load(params, data_dir, backbone, variant, graphs_file)
    name, cfg, metric = study_name(runner), runner.params.tune, runner.params.train.valid_metric
    study = open_study(runner.params, name)
    parent = Tracker.start(params.tracking, runner.dataset.name, f"tune-{name}",
                           run_tags(dataset=runner.dataset.name, data_dir=data_dir, backbone=backbone, variant=variant,
                                    seed=params.seed, standin=runner.standin, device=runner.device, stage="tune")
                           | {"optuna_study": name, "optuna_role": "study"},
                           reuse={"optuna_study": name, "optuna_role": "study"},
                           supersede={"optuna_study": name})
    parent.log_params(search_settings(runner))  # fixed for the study; what may change between resumes is a tag
    parent.set_tags({"tune.n_trials": cfg.n_trials, "tune.timeout_s": cfg.timeout_s, "tune.storage": cfg.storage})
    done = sum(count(study)[s.name.lower()] for s in FINISHED)
    remaining = max(cfg.n_trials - done, 0)
    log.info("study %s (%s): %d of %d trials finished, %d to run, at most %d epochs each", name, cfg.storage,
             done, cfg.n_trials, remaining, runner.params.train.epochs)
    if remaining > 0:
        study.optimize(Objective(runner, name, parent), n_trials=remaining, timeout=cfg.timeout_s,
                       callbacks=[progress(cfg.n_trials, metric)], catch=(NonFiniteLossError,))
    if not any(t.state == TrialState.COMPLETE for t in study.trials):
        parent.end("FAILED")
        raise SystemExit(f"study {name}: no trial completed ({count(study)})")
    result = summary(study, runner, name)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    plots = write_plots(study, out, params.seed, target=f"validation {metric}")
    parent.log_metrics({f"best_valid_{metric_key(metric)}": result["best_value"]} |
                       {f"best_{k}": v for k, v in result["values"].items()} |
                       {f"n_{state}": n for state, n in result["n_trials"].items()})
    parent.set_tags({"best_trial": result["best_trial"]})
    for path in (out, *plots):
        parent.log_artifact(path)
    parent.end("FINISHED")
    log.info("best %s %.4f (trial %d): %s; wrote %s", metric, result["best_value"], result["best_trial"],
             " ".join(f"{k} {v:.3g}" for k, v in result["values"].items()), out)
    return result


def summary(study: optuna.Study, runner: TrialRunner, name: str) -> dict:
    best, cfg = study.best_trial, runner.params.tune
    space = search_space(runner.params, runner.backbone, runner.variant)
    values = {key: best.params[n] for n, (key, _, _) in space.items()}
    trials = count(study)
    return {"source": "optuna", "dataset": runner.dataset.name, "backbone": runner.backbone,
            "variant": runner.variant, "trials": trials["complete"] + trials["pruned"], "values": values,
            "valid_metric": runner.params.train.valid_metric, "best_value": best.value, "best_trial": best.number,
            "best_epoch": best.user_attrs.get("best_epoch"), "n_trials": trials, "study_name": name,
            "storage": cfg.storage, "seed": runner.params.seed, "epochs_per_trial": runner.params.train.epochs,
            "search": {n: [low, high] for n, (_, low, high) in space.items()}}


def plot_paths(out: Path) -> tuple[Path, Path]:
    return out.with_name(f"{out.stem}_history.png"), out.with_name(f"{out.stem}_importances.png")


def write_plots(study: optuna.Study | None, out: Path, seed: int, target: str = "objective",
                note: str = "") -> tuple[Path, Path]:
    """Optimisation history and parameter importances (fANOVA, seeded); a note where there is nothing to show."""
    import warnings

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as oplt

    history, importances = plot_paths(out)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE] if study else []
    for path, draw, needed in ((history, lambda: oplt.plot_optimization_history(study, target_name=target), 1),
                               (importances, lambda: oplt.plot_param_importances(  # fANOVA imports sklearn: seconds
                                   study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed),
                                   target_name=target), 2)):
        reason = note or (f"needs at least {needed} complete trials, the study has {len(complete)}"
                          if len(complete) < needed else "")
        if not reason:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    figure = draw().figure
            except (ValueError, RuntimeError, ZeroDivisionError) as err:  # e.g. every trial with the same values
                reason = f"cannot be computed: {err}"
        if reason:
            figure, axes = plt.subplots(figsize=(6, 2))
            axes.axis("off")
            axes.text(0.5, 0.5, f"{path.stem}: {reason}", ha="center", va="center", wrap=True)
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
    return history, importances


def passthrough(params: Params, dataset: str, backbone: str, variant: str, out: Path, reason: str) -> dict:
    """The tuned file of an untuned backbone: a budget of 0 trials, params.yaml's values, written at once."""
    values = {f"mrdib.{a}": getattr(params.mrdib, a) for a in ALPHAS} if variant == "mrdib" else {}
    result = {"source": "params.yaml", "reason": reason, "dataset": dataset, "backbone": backbone,
              "variant": variant, "trials": 0, "values": values}
    write_json(out, result)
    write_plots(None, out, params.seed, note=f"not tuned ({reason})")
    log.info("%s/%s on %s not tuned (%s): params.yaml's values written to %s", backbone, variant, dataset, reason, out)
    return result


