"""Training one model: from params, a dataset folder, a backbone and a variant to metrics.json.

The train, reference and ablate stages (tasks/train.py, tasks/reference.py, tasks/ablate.py) run
`command()`; the tune and sweep stages call `run()` and `build_model()` directly.

    python -m tasks.train --data-dir DIR --backbone NAME --variant base|mrdib --out DIR \
        [--epochs N] [--seed S | --seeds S [S ...] | --pipeline-seeds] [--checkpoints DIR]
        [--set key=value ...] [--standin-features] [--tuned tuned/D/B.json]

With several seeds (--seeds, or --pipeline-seeds: params.yaml's pipeline.seeds) it trains one
model per seed in this one process, into DIR/seed<S>/ each: the pipeline's stages do this, as a
new process costs seconds of imports and MLflow set-up, more than a model on the default data.

Writes DIR/metrics.json (valid and test: 16 metrics each, best_epoch, seconds_per_epoch),
DIR/per_user_test.npz (each test user's metrics, for paired tests), DIR/history.json (per-epoch
loss terms and validation metrics), DIR/best.pt (the best checkpoint) and DIR/train.log. The
checkpoints of the run in progress (last.pt, best.pt) go to --checkpoints (default DIR): a killed
run resumes from there, and a finished one only re-evaluates. With `tracking.enabled` the run is
also an MLflow run whose model is registered (pipeline/tracking.py); --tuned takes the tuned values
(learning rate, regularisation, and for mrdib the alphas) from the tune stage's file for this
variant (tasks/tune.py); metrics.json records its budget (`tuning`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from config.backbones import BACKBONES
from config.metrics import metric_key
from config.params import TRAIN_ON, Params, load_params
from config.sections import ABLATIONS, ablated
from models.base import ModelContext, Recommender
from models.data import Dataset, load_dataset
from models.evaluation import Evaluator, summarize
from models.graph import load_graphs
from models.registry import get_backbone
from models.trainer import CheckpointRefused, Trainer, TrainSettings, pick_device, seed_everything
from pipeline.errors import EXIT_CHECKPOINT, EXIT_DATA, EXIT_USAGE, Refusal
from pipeline.io import LOG_FORMAT, atomic_path, copy_file, write_json
from pipeline.tracking import Tracker, finish_training_run, start_training_run, tracking_enabled

log = logging.getLogger("pipeline.training")
VARIANTS = ("base", "mrdib")


def model_context(params: Params, dataset: Dataset, variant: str, device: torch.device) -> ModelContext:
    return ModelContext(
        n_users=dataset.n_users, n_items=dataset.n_items, train=dataset.train,
        features={m: torch.as_tensor(f, device=device) for m, f in dataset.features.items()},
        embedding_dim=params.train.embedding_dim, device=device, seed=params.seed,
        mrdib=params.mrdib if variant == "mrdib" else None)


def build_model(params: Params, dataset: Dataset, backbone: str, variant: str, device: torch.device,
                graphs: Path | dict | None = None) -> Recommender:
    """The backbone with its fixed graphs: read from `graphs` (the graphs stage's file), given (a dict
    of graphs already built, as the tuner's trials share them), or built here (None)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    model_class = get_backbone(backbone)
    if variant == "mrdib" and not model_class.modalities:
        raise ValueError(f"backbone {backbone!r} uses no modality features: MRdIB does not apply to it")
    ctx, config = model_context(params, dataset, variant, device), params.backbone_config(backbone)
    if isinstance(graphs, dict):
        ctx.graphs = graphs
    elif graphs is not None:
        ctx.graphs = load_graphs(graphs, model_class.graph_key(ctx, config))
    return model_class(ctx, config).to(device)


def fingerprint(params: Params, data_dir: Path, backbone: str, variant: str) -> str:
    # Only what shapes the run: a new, unrelated params section must not restart half-finished runs.
    relevant = params.model_dump(mode="json", include={"seed", "data", "train", "mrdib"})
    relevant["train"].pop("checkpoint_seconds")  # when last.pt is written does not shape the run
    text = json.dumps([relevant, params.backbone_config(backbone).model_dump(mode="json"),
                       str(data_dir.resolve()), backbone, variant], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_settings(params: Params) -> TrainSettings:
    t = params.train
    return TrainSettings(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, patience=t.patience,
                         valid_metric=t.valid_metric, weight_decay=t.weight_decay, progress=t.progress,
                         checkpoint_seconds=t.checkpoint_seconds)


def run(params: Params, data_dir: Path, backbone: str, variant: str, out: Path, graphs: Path | None = None,
        track: bool = False, tags: dict[str, str] | None = None, checkpoints: Path | None = None,
        tuning: dict | None = None) -> dict:
    """Train, evaluate, write metrics.json; returns the metrics. graphs: the graphs stage's file, if any.

    track: also an MLflow run (pipeline/tracking.py; never stops training), with `tags` added.
    checkpoints: where the run in progress keeps last.pt and best.pt (default `out`); the best
    checkpoint is copied into `out` at the end. tuning: what tuned the values (recorded as is;
    default: no tuning, a budget of 0 trials)."""
    seed_everything(params.seed)
    device = pick_device(params.train.device)
    dataset = load_dataset(data_dir, standin=params.data.standin_features, seed=params.seed)
    log.info("%s", dataset.summary())
    overrides = params.train_overrides(dataset.name, backbone)
    if overrides:
        log.info("train overrides of %s on dataset %s: %s", backbone, dataset.name, overrides)
        params = params.for_dataset(dataset.name, backbone)
    model = build_model(params, dataset, backbone, variant, device, graphs)
    standin = [m for m in dataset.standin_features if m in model.modalities]  # what the model actually uses
    if standin:
        log.warning("STAND-IN FEATURES for %s: seeded noise with no signal; results are not comparable "
                    "to published numbers", standin)
    log.info("%s/%s on %s, %d parameters, device %s", backbone, variant, dataset.name,
             sum(p.numel() for p in model.parameters()), device)
    evaluator = Evaluator(dataset.n_users, dataset.n_items, dataset.train,
                          {"valid": dataset.valid, "test": dataset.test},
                          batch_size=params.train.eval_batch_size, device=device)
    settings = train_settings(params)
    key = fingerprint(params, data_dir, backbone, variant)
    tracker = start_training_run(params, dataset=dataset.name, data_dir=data_dir, backbone=backbone, variant=variant,
                                 device=device, standin=standin, extra_tags=tags, supersede={"run_key": key},
                                 background=True) if track else Tracker()
    checkpoints = checkpoints or out
    trainer = Trainer(model, dataset.train, evaluator, settings, checkpoints, params.seed, fingerprint=key,
                      on_epoch=tracker.log_epoch)
    try:
        per_user = trainer.fit()
    except BaseException:
        tracker.end("FAILED")
        raise
    means = summarize(per_user)
    valid, test = means["valid"], means["test"]
    if checkpoints.resolve() != out.resolve():
        copy_file(trainer.best_path, out / "best.pt")
    save_per_user(out / "per_user_test.npz", *per_user["test"])
    history = trainer.state.history
    metrics = {"valid": valid, "test": test, "best_epoch": trainer.state.best_epoch,
               "seconds_per_epoch": sum(h["seconds"] for h in history) / len(history) if history else 0.0,
               "epochs_run": trainer.state.epoch, "backbone": backbone, "variant": variant,
               "dataset": dataset.name, "seed": params.seed, "device": str(device),
               "standin_features": standin,
               "alphas": {k: getattr(params.mrdib, k) for k in ("alpha1", "alpha2", "alpha3")}
               if variant == "mrdib" else None,
               "keep_encoder": params.mrdib.keep_encoder if variant == "mrdib" else False,
               "tuning": tuning or {"trials": 0, "source": "params.yaml"}}
    if standin:
        metrics["warning"] = (f"STAND-IN features for {standin}: seeded noise with no signal; "
                              "not comparable to published numbers")
    write_json(out / "history.json", history)
    write_json(out / "metrics.json", metrics)
    finish_training_run(tracker, params, metrics, history, model, tags)  # after metrics.json: MLflow may fail
    log.info("best epoch %d; test %s", metrics["best_epoch"],
             " ".join(f"{k} {v:.4f}" for k, v in test.items() if k.endswith("@20")))
    return metrics


def with_values(params: Params, values: dict[str, float]) -> Params:
    """params with dotted keys set and validated (mrdib.alpha1, train.lr, backbones.vbpr.reg_weight).

    A `train.*` value also replaces that key's overrides for datasets and for backbones on a dataset
    (train_overrides): it was tuned, or typed on the command line, on top of them."""
    raw = params.model_dump(by_alias=True)
    for key, value in values.items():
        *path, name = key.split(".")
        node = raw
        for part in path:
            node = node.setdefault(part, {})
        node[name] = value
        if path == ["train"]:
            replace_train_overrides(raw, name, value)
    return Params(**raw)


def replace_train_overrides(raw: dict, name: str, value) -> None:
    """Set `name` to `value` in each dataset's train overrides and each backbone's train_on overrides that set it."""
    on_datasets = [dataset.get("train") for dataset in raw["datasets"].values()]
    on_backbones = [overrides for backbone in raw["backbones"].values()
                    for overrides in ((backbone or {}).get(TRAIN_ON) or {}).values()]
    for overrides in on_datasets + on_backbones:
        if overrides and name in overrides:
            overrides[name] = value


def read_tuned(path: Path, variant: str | None = None) -> dict:
    """The tune stage's file: {"source": "optuna" | "params.yaml", "variant", "trials",
    "values": {"train.lr": ..., "mrdib.alpha1": ...}, ...}; `variant`: the one it must be for."""
    try:
        tuned = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise Refusal(f"{path}: cannot read the tuned file: {err}", EXIT_DATA) from None
    if not isinstance(tuned, dict) or not isinstance(tuned.get("values"), dict) or \
            not isinstance(tuned.get("trials"), int):
        raise Refusal(f"{path}: not a tuned file of tasks.tune (expected `values` and `trials`)", EXIT_DATA)
    if variant is not None and tuned.get("variant") != variant:
        raise Refusal(f"{path}: tuned for variant {tuned.get('variant')!r}, expected {variant!r}", EXIT_DATA)
    return tuned


def tuning_record(tuned: dict, path: Path) -> dict:
    """What metrics.json keeps of a tuned file: the budget, where the values came from, the values."""
    return {"trials": tuned["trials"], "source": tuned.get("source", "?"), "file": str(path),
            "values": tuned["values"]}


def save_per_user(path: Path, users, values: dict) -> None:
    """Per-user test metrics (for paired bootstrap tests between runs), written atomically."""
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, users=users, **{metric_key(name): v for name, v in values.items()})


STAGES = {"train": "Train and evaluate one model (base or mrdib) on one dataset folder.",
          "reference": "Train and evaluate one ID-only reference (pop, bprmf, lightgcn) on one dataset folder.",
          "ablate": "Train and evaluate one ablation of the mrdib variant (the paper's Table 2)."}


def parse_args(argv: list[str] | None, stage: str = "train") -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=STAGES[stage])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with <name>.inter and *_feat.npy")
    parser.add_argument("--backbone", required=True, help=f"one of {sorted(BACKBONES)}")
    parser.add_argument("--variant", default="base", choices=VARIANTS)
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder; with several seeds, the parent of one seed<S>/ folder per seed")
    parser.add_argument("--checkpoints", type=Path,
                        help="where runs in progress keep last.pt and best.pt, to resume (default: --out)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--graphs", type=Path, help="the backbone's fixed graphs from the graphs stage (.npz); "
                        "default: build them in memory")
    parser.add_argument("--tuned", type=Path, help="the tune stage's file for this variant "
                        "(tuned/<dataset>/<backbone>-<variant>.json): its values are used")
    parser.add_argument("--epochs", type=int, help="shorthand for --set train.epochs=N")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="shorthand for --set seed=S")
    seeds.add_argument("--seeds", type=int, nargs="+", help="one model per seed, into OUT/seed<S>/")
    seeds.add_argument("--pipeline-seeds", action="store_true",
                       help="--seeds with params.yaml's pipeline.seeds (what the DVC stages run)")
    parser.add_argument("--ablation", choices=sorted(ABLATIONS), required=stage == "ablate",
                        help="mrdib variant with some alphas set to 0 (the paper's Table 2)")
    parser.add_argument("--standin-features", action="store_true",
                        help="fill missing feature files with seeded noise (flagged in every output)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any params.yaml key, e.g. --set mrdib.alpha1=0.01")
    return parser.parse_args(argv)


def command(argv: list[str] | None = None, stage: str = "train") -> None:
    """The train, reference and ablate stages: `stage` is tagged on every MLflow run (and names the
    runs of an ablation apart from the full MRdIB runs)."""
    args = parse_args(argv, stage)
    overrides = list(args.overrides)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.standin_features:
        overrides.append("data.standin_features=true")
    params = load_params(args.params, overrides)
    # A train.* value typed on the command line beats the dataset's (and backbone's) override of that key
    typed = {key.split("=", 1)[0] for key in overrides if key.startswith("train.")}
    params = with_values(params, {key: getattr(params.train, key.removeprefix("train.")) for key in typed})
    tags, tuning = {}, None
    if args.tuned is not None:
        tuned = read_tuned(args.tuned, args.variant)
        params = with_values(params, tuned["values"])
        tuning = tuning_record(tuned, args.tuned)
        tags = {"tuned_source": tuned.get("source", "?"), "tuned_file": str(args.tuned),
                "tuning_trials": str(tuned["trials"])}
    if args.ablation:
        if args.variant != "mrdib":
            raise Refusal("--ablation applies to --variant mrdib only", EXIT_USAGE)
        params = params.model_copy(update={"mrdib": ablated(params.mrdib, args.ablation)})
        tags["ablation"] = args.ablation
        stage = "ablate"  # whichever command ran it: an ablation is told apart by name and tag
    if stage != "train":
        tags["stage"] = stage
    seeds = params.report_seeds() if args.pipeline_seeds else args.seeds
    if seeds is None:  # one run, straight into --out
        train_one(params, args, args.out, args.checkpoints, tags, tuning)
    for seed in seeds or []:
        folder = Path(f"seed{seed}")
        train_one(params.model_copy(update={"seed": seed}), args, args.out / folder,
                  args.checkpoints / folder if args.checkpoints else None, tags, tuning)


def train_one(params: Params, args: argparse.Namespace, out: Path, checkpoints: Path | None,
              tags: dict[str, str], tuning: dict | None = None) -> None:
    """One run with its own train.log in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(format=LOG_FORMAT, handlers=[logging.StreamHandler()])  # no-op when already configured
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    try:
        started = time.perf_counter()
        try:
            run(params, args.data_dir, args.backbone, args.variant, out, args.graphs,
                track=tracking_enabled(params.tracking), tags=tags, checkpoints=checkpoints, tuning=tuning)
        except CheckpointRefused as err:  # a message, not a traceback: the file is the user's to inspect
            raise Refusal(str(err), EXIT_CHECKPOINT) from None
        log.info("done in %.1fs; wrote %s", time.perf_counter() - started, out / "metrics.json")
    finally:
        root.removeHandler(handler)
        handler.close()

