"""Stage `tune@<dataset>-<backbone>-<variant>`: Optuna over one variant of one backbone, on validation only.

    python -m tasks.tune --dataset D --data-dir data/prepared/D --backbone B --variant base|mrdib \
        --out tuned/D/B-<variant>.json [--params params.yaml] [--graphs FILE] [--set key=value ...] [--verbose]

Equal budgets: base and MRdIB of a backbone are tuned by the same study settings - the same
tune.n_trials, sampler, pruner, epoch cap and search space for what they share (train.lr and the
regularisation weight: the backbone's reg_weight in [tune.reg_low, reg_high], or Adam's train.weight_decay in
[tune.weight_decay_low, weight_decay_high] where it has none) -
and MRdIB's study adds alpha1..alpha3 (the paper tuned those by hand over a 5^3 grid). A
comparison in which only one side is tuned measures the tuning, not the method.

TPE (seed = params.seed) samples every value log-uniformly in its [tune.*_low, tune.*_high]; each
trial trains at most tune.epochs epochs and reports its best validation metric
(train.valid_metric) so far after every epoch to a MedianPruner. The objective is that metric
only: the test split is dropped when the data is loaded, so nothing here can read it.

The study lives in tune.storage (sqlite under mlruns/). A killed stage started again resumes it
(load_if_exists): the trial the kill interrupted is marked FAIL and its parameters are tried again.
The study's name holds a key of everything the trials depend on except n_trials and timeout_s, so
raising n_trials continues a study and any other change starts a new one.

MLflow: one parent run per study (tags stage=tune, optuna_study) and one nested run per trial,
tagged trial_state = COMPLETE / PRUNED / FAIL, with the trial's parameters, per-epoch loss terms
and validation metrics; the parent holds the best values, the plots and the tuned file.

Writes OUT = tuned/<D>/<B>-<variant>.json: {"source": "optuna", "variant", "trials" (the budget:
finished trials), "values": {"train.lr": ..., "mrdib.alpha1": ...}, "best_value", "valid_metric",
"n_trials": {"complete", "pruned", "fail"}, "study_name", ...} and OUT's _history.png and
_importances.png beside it. A backbone not in tune.backbones, or tune.n_trials = 0, gets the file
at once with params.yaml's values ("source": "params.yaml", "trials": 0) for both variants alike,
so every train stage depends on its tuned file uniformly.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import optuna

from config.params import load_params
from config.sections import VARIANTS
from pipeline.errors import EXIT_USAGE, Refusal, run_command
from pipeline.io import quiet_loggers, setup_logging
from pipeline.tuning import passthrough, tune

log = logging.getLogger("tasks.tune")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tune the MRdIB weights of one backbone on one dataset (Optuna).")
    parser.add_argument("--dataset", required=True, help="the dataset's name (its .inter file's stem)")
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with <dataset>.inter and *_feat.npy")
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--variant", choices=VARIANTS, default="mrdib",
                        help="which variant's study (both get the same budget and shared search space)")
    parser.add_argument("--out", type=Path, required=True,
                        help="the tuned file, e.g. tuned/<dataset>/<backbone>-<variant>.json")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--graphs", type=Path, help="the backbone's fixed graphs from the graphs stage (.npz)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any params.yaml key, e.g. --set tune.n_trials=20")
    parser.add_argument("--verbose", action="store_true", help="also a log line per epoch of every trial")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    if not args.verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # progress() writes one line per trial instead
    with quiet_loggers(*([] if args.verbose else ["models.trainer"])):
        run_study(args)


def run_study(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.backbone not in params.tune.backbones:
        passthrough(params, args.dataset, args.backbone, args.variant, args.out,
                    f"{args.backbone} not in tune.backbones")
        return
    if params.tune.n_trials == 0:
        passthrough(params, args.dataset, args.backbone, args.variant, args.out, "tune.n_trials is 0")
        return
    if not (params.tune.tune_lr or params.tune.tune_reg):
        raise Refusal("tune.tune_lr and tune.tune_reg are both false: the base variant would have nothing to "
                      "tune, and a budget for MRdIB alone is not a fair comparison (set tune.n_trials=0 for none)",
                      EXIT_USAGE)
    inter = sorted(args.data_dir.glob("*.inter"))
    if [p.stem for p in inter] != [args.dataset]:
        raise Refusal(f"--dataset {args.dataset} but {args.data_dir} holds {[p.name for p in inter]}", EXIT_USAGE)
    started = time.perf_counter()
    tune(params, args.data_dir, args.backbone, args.out, args.graphs, args.variant)
    log.info("done in %.1fs", time.perf_counter() - started)


if __name__ == "__main__":
    run_command(main)
