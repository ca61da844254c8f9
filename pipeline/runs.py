"""Finished runs on disk: `<root>/<dataset>/<backbone>-<setting>/seed<N>/` as the train, reference and
ablate stages write them (metrics.json, per_user_test.npz), loaded and checked for a fair comparison."""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from config.metrics import metric_key
from config.sections import ABLATIONS, KEEPS_ENCODER
from pipeline.stats import mean_and_std

RUN_GROUP = re.compile(r"^(?P<backbone>[a-z0-9_]+)-(?P<setting>[a-z0-9_]+)$")  # <backbone>-<variant or ablation>


SEED_FOLDER = re.compile(r"^seed(?P<seed>\d+)$")


class RunError(ValueError):
    """A run folder is incomplete or contradicts its name."""


@dataclass
class Run:
    dataset: str
    backbone: str
    variant: str
    seed: int
    metrics: dict
    folder: Path

    def per_user(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        data = np.load(self.folder / "per_user_test.npz")
        return data["users"], data[metric_key(metric)]


def run_folders(root: Path):
    """(folder, dataset, backbone, setting, seed) of every ROOT/<dataset>/<backbone>-<setting>/seed<N>/."""
    for folder in sorted(p for p in Path(root).glob("*/*/seed*") if p.is_dir()):
        group, seed = RUN_GROUP.match(folder.parent.name), SEED_FOLDER.match(folder.name)
        if group and seed:
            yield folder, folder.parent.parent.name, group["backbone"], group["setting"], int(seed["seed"])


def load_runs(root: Path, settings: Iterable[str]) -> list[Run]:
    """Every ROOT/<dataset>/<backbone>-<setting>/seed<N>/ whose setting is in `settings`.

    A matching folder without a readable metrics.json is an error naming the folder: a table
    silently missing a seed would report a different mean than the one it claims.
    """
    settings, runs = set(settings), []
    for folder, dataset, backbone, setting, seed in run_folders(root):
        if setting not in settings:
            continue
        path = folder / "metrics.json"
        if not path.is_file():
            raise RunError(f"{folder}: no metrics.json (the run did not finish; train it again)")
        try:
            metrics = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise RunError(f"{path}: not valid JSON ({err})") from None
        runs.append(Run(dataset, backbone, setting, seed, metrics, folder))
        check_alphas(runs[-1])
    return runs


def check_alphas(run: Run) -> None:
    """An ablation run must have trained with the weights its name says are zero."""
    alphas = run.metrics.get("alphas") or {}
    wrong = [name for name in ABLATIONS.get(run.variant, ()) if alphas.get(name, 0.0) != 0.0]
    if wrong:
        raise RunError(f"{run.folder}: named {run.variant!r} but metrics.json records {alphas} ({wrong} not 0)")
    if run.variant in KEEPS_ENCODER and not run.metrics.get("keep_encoder"):
        raise RunError(f"{run.folder}: named {run.variant!r} but metrics.json records no kept encoder")
    if run.variant in ABLATIONS and run.variant not in KEEPS_ENCODER and run.metrics.get("keep_encoder"):
        raise RunError(f"{run.folder}: named {run.variant!r} but metrics.json records a kept encoder "
                       f"(keep_encoder is the encoder_only control's)")


def check_paired(base: list[Run], other: list[Run]) -> None:
    """Both sides trained with the same seeds and the same tuning budget, or RunError naming them."""
    seeds = lambda runs: sorted(r.seed for r in runs)  # noqa: E731
    if seeds(base) != seeds(other):
        raise RunError(f"unpaired seeds: {base[0].folder.parent} has {seeds(base)}, {other[0].folder.parent} has "
                       f"{seeds(other)} (train both with the same pipeline.seeds)")
    budgets = {r.folder: tuning_trials(r) for r in base + other}
    if len({budgets[r.folder] for r in base}) > 1 or len({budgets[r.folder] for r in other}) > 1 \
            or tuning_trials(base[0]) != tuning_trials(other[0]):
        raise RunError(f"unequal tuning budgets: {base[0].folder.parent} {sorted({tuning_trials(r) for r in base})} "
                       f"trials, {other[0].folder.parent} {sorted({tuning_trials(r) for r in other})}: "
                       "a comparison where one side was tuned more measures the tuning (give tune.backbones both)")


def tuning_trials(run: Run) -> int:
    """The tuning budget (finished Optuna trials) that chose the run's values; 0 = untuned."""
    tuning = run.metrics.get("tuning")
    if not isinstance(tuning, dict) or not isinstance(tuning.get("trials"), int):
        raise RunError(f"{run.folder}/metrics.json: no tuning record (`tuning.trials`); train it again")
    return tuning["trials"]


def seed_user_differences(base: list[Run], other: list[Run], metric: str) -> np.ndarray:
    """[n_seeds, n_users] per-user test differences other - base, seed by seed (paired)."""
    by_seed = {r.seed: r for r in base}
    rows = []
    for run in sorted(other, key=lambda r: r.seed):
        users_o, values_o = run.per_user(metric)
        users_b, values_b = by_seed[run.seed].per_user(metric)
        if not np.array_equal(users_o, users_b):
            raise RunError(f"{run.folder} and {by_seed[run.seed].folder} evaluated different users")
        rows.append(values_o - values_b)
    return np.array(rows)


def mean_std(runs: list[Run], metric: str) -> tuple[float, float]:
    """Mean and sample std of a test metric over the runs (seeds)."""
    return mean_and_std([r.metrics["test"][metric] for r in runs])

