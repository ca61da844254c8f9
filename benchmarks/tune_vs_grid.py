"""Optuna (TPE + MedianPruner) against the paper's 125-point grid over alpha1..alpha3, on validation.

    python -u -m benchmarks.tune_vs_grid --backbone vbpr [--data-dir data/prepared/synthetic] [--epochs 40] \
        [--grid-epochs N] [--trials 25] [--grid-values 1e-4 1e-3 5e-3 1e-2 5e-2] \
        [--out results/tune_vs_grid.json] [--grid-from OLD.json] [--set key=value ...]

Both search the objective of the tune stage (tasks.tune.TrialRunner: the best validation metric
within the epoch cap, early stopping with train.patience; the test split is never loaded), on the
synthetic default (generated from params.yaml's `synthetic:` into a temporary folder when
--data-dir does not exist). Optuna samples log-uniformly in [tune.alpha_low, tune.alpha_high] with
TPE (seed = params.seed) and prunes with the MedianPruner of `tune:`; the grid trains every
combination of --grid-values. Prints the best validation value of each, its alphas, the wall time
and the ratio of times, and when Optuna first reached the grid's best. --grid-epochs below --epochs
makes the grid cheaper than the paper's protocol (and weaker): the output says so. Nothing is
logged to MLflow; OUT is rewritten after every grid point, so a long run can be read while it goes.
--grid-from takes the finished grid of an earlier OUT (same data, train settings, grid values and
epochs; its timing stays the one measured then) to compare other Optuna settings without the grid's hours.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import tempfile
import time
from pathlib import Path

import optuna

from config.params import load_params
from models.trainer import NonFiniteLossError
from pipeline.errors import EXIT_DATA, Refusal, run_command
from pipeline.io import setup_logging, write_json
from pipeline.synthetic import generate, write_dataset
from pipeline.tracking import data_version
from pipeline.training import with_values
from pipeline.tuning import Objective, TrialRunner

log = logging.getLogger("benchmarks.tune_vs_grid")
PAPER_GRID = [1e-4, 1e-3, 5e-3, 1e-2, 5e-2]


def run_optuna(runner: TrialRunner, trials: int) -> dict:
    cfg = runner.params.tune
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=runner.params.seed,
                                                                 n_startup_trials=cfg.startup_trials),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=cfg.pruner_startup_trials,
                                           n_warmup_steps=cfg.pruner_warmup_epochs))
    started, trace = time.perf_counter(), []

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trace.append({"trial": trial.number, "state": trial.state.name, "value": trial.value,
                      "epochs": trial.user_attrs.get("epochs_run"), "seconds": time.perf_counter() - started,
                      "params": trial.params})
        log.info("optuna trial %2d %-8s %s  epochs %s  %.0fs", trial.number, trial.state.name,
                 f"{trial.value:.4f}" if trial.value is not None else "-", trial.user_attrs.get("epochs_run"),
                 time.perf_counter() - started)

    study.optimize(Objective(runner, "benchmark", track=False), n_trials=trials, callbacks=[record],
                   catch=(NonFiniteLossError,))
    return {"best_value": study.best_value, "best_params": study.best_params, "seconds": time.perf_counter() - started,
            "trials": trials, "pruned": sum(t["state"] == "PRUNED" for t in trace),
            "epochs_trained": sum(t["epochs"] or 0 for t in trace), "trace": trace}


def run_grid(runner: TrialRunner, values: list[float], epochs: int, out: Path, result: dict) -> dict:
    params = with_values(runner.params, {"train.epochs": epochs})
    points = list(itertools.product(values, repeat=3))
    started, scores, epochs_trained = time.perf_counter(), [], 0
    for i, (a1, a2, a3) in enumerate(points, 1):
        trial = with_values(params, {"mrdib.alpha1": a1, "mrdib.alpha2": a2, "mrdib.alpha3": a3})
        try:
            trainer = runner.fit(trial)
            scores.append({"alphas": [a1, a2, a3], "value": trainer.state.best_score})
            epochs_trained += trainer.state.epoch
        except NonFiniteLossError as err:
            scores.append({"alphas": [a1, a2, a3], "value": None, "error": str(err)[:200]})
        elapsed = time.perf_counter() - started
        best = max((s for s in scores if s["value"] is not None), key=lambda s: s["value"], default=None)
        log.info("grid %3d/%d  alphas %.0e %.0e %.0e  %s  best %s  %.0fs (ETA %.0fs)", i, len(points), a1, a2, a3,
                 f"{scores[-1]['value']:.4f}" if scores[-1]["value"] is not None else "NaN",
                 f"{best['value']:.4f}" if best else "-", elapsed, elapsed / i * (len(points) - i))
        result["grid"] = {"best_value": best and best["value"], "best_alphas": best and best["alphas"],
                          "seconds": elapsed, "points_done": i, "points": len(points), "epochs": epochs,
                          "epochs_trained": epochs_trained, "scores": scores}
        write_json(out, result)
    return result["grid"]


def reuse_grid(path: Path, values: list[float], epochs: int, result: dict) -> dict:
    old = json.loads(path.read_text())
    grid = old.get("grid") or {}
    points = {tuple(score["alphas"]) for score in grid.get("scores", [])}
    if points != set(itertools.product(values, repeat=3)) or grid.get("epochs") != epochs or \
            any(old.get(key) != result[key] for key in ("dataset", "seed", "train", "data_md5")):
        raise Refusal(f"{path}: no finished grid of {len(values) ** 3} points at {epochs} epochs on the same "
                      f"data, seed and train settings", EXIT_DATA)
    log.info("grid reused from %s: best %.4f, %.0fs when it ran", path, grid["best_value"], grid["seconds"])
    result["grid"] = grid | {"reused_from": str(path)}
    return result["grid"]


def dataset_folder(args, params) -> Path:
    if args.data_dir.exists():
        return args.data_dir
    folder = Path(tempfile.mkdtemp(prefix="tune-vs-grid-")) / "synthetic"
    write_dataset(folder, *generate(params.synthetic, params.seed))
    log.info("%s does not exist: generated the synthetic default into %s", args.data_dir, folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vbpr")
    parser.add_argument("--data-dir", type=Path, default=Path("data/prepared/synthetic"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--epochs", type=int, help="epoch cap of an Optuna trial (default: tune.epochs)")
    parser.add_argument("--grid-epochs", type=int, help="epoch cap of a grid point (default: --epochs)")
    parser.add_argument("--trials", type=int, default=25)
    parser.add_argument("--grid-values", type=float, nargs="+", default=PAPER_GRID)
    parser.add_argument("--out", type=Path, default=Path("results/tune_vs_grid.json"))
    parser.add_argument("--grid-from", type=Path, help="an earlier OUT whose finished grid is reused")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    setup_logging()
    logging.getLogger("models.trainer").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The grid covers the alphas only: Optuna searches the same space (a --set can widen it).
    alphas_only = ["tune.tune_lr=false", "tune.tune_reg=false"]
    params = load_params(args.params, alphas_only + args.overrides +
                         ([f"tune.epochs={args.epochs}"] if args.epochs else []))
    runner = TrialRunner.load(params, dataset_folder(args, params), args.backbone)
    epochs = runner.params.train.epochs
    grid_epochs = args.grid_epochs or epochs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"backbone": args.backbone, "dataset": runner.dataset.name, "metric": runner.params.train.valid_metric,
              "epochs": epochs, "grid_epochs": grid_epochs, "patience": runner.params.train.patience,
              "seed": params.seed, "tune": runner.params.tune.model_dump(),
              "train": runner.params.train.model_dump(exclude={"epochs"}), "data_md5": data_version(runner.data_dir)}
    log.info("%s on %s, valid %s, trial cap %d epochs, grid cap %d epochs%s", args.backbone, runner.dataset.name,
             result["metric"], epochs, grid_epochs,
             " (REDUCED: the grid is cheaper and weaker than at the trial cap)" if grid_epochs < epochs else "")
    result["optuna"] = run_optuna(runner, args.trials)
    write_json(args.out, result)
    grid = reuse_grid(args.grid_from, args.grid_values, grid_epochs, result) if args.grid_from \
        else run_grid(runner, args.grid_values, grid_epochs, args.out, result)
    opt = result["optuna"]
    reached = next((t for t in opt["trace"] if t["value"] is not None and t["value"] >= grid["best_value"]), None)
    result["optuna_reached_grid_best"] = reached and {"trial": reached["trial"], "seconds": reached["seconds"]}
    result["time_ratio"] = opt["seconds"] / grid["seconds"]
    write_json(args.out, result)
    print(f"\n{args.backbone} on {runner.dataset.name}, validation {result['metric']} "
          f"(trial cap {epochs} epochs, grid cap {grid_epochs}{' REDUCED' if grid_epochs < epochs else ''}):")
    print(f"  grid   {grid['points']:3d} points          best {grid['best_value']:.4f} at alphas "
          f"{grid['best_alphas']}  {grid['seconds']:.0f}s, {grid['epochs_trained']} epochs")
    print(f"  optuna {opt['trials']:3d} trials ({opt['pruned']} pruned) best {opt['best_value']:.4f} at "
          f"{ {k: float(f'{v:.3g}') for k, v in opt['best_params'].items()} }  {opt['seconds']:.0f}s, "
          f"{opt['epochs_trained']} epochs")
    print(f"  optuna / grid wall time: {result['time_ratio']:.2f}; optuna "
          + (f"reached the grid's best at trial {reached['trial']} after {reached['seconds']:.0f}s"
             if reached else "did NOT reach the grid's best"))
    print(f"  wrote {args.out}")


if __name__ == "__main__":
    run_command(main)
