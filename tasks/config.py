"""params.yaml as typed, validated configuration, with `--set key=value` overrides.

Unknown keys (in the file or in an override) and wrong types are errors that name the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from models.config import StrictConfig
from models.evaluation import metric_names
from models.mrdib import ABLATIONS, MRdIBConfig
from models.registry import BACKBONES
from tasks.download import DownloadConfig
from tasks.features import FeaturesConfig
from tasks.filter import FilterConfig
from tasks.synthetic import SyntheticConfig
from tasks.tracking import TrackingConfig
from tasks.validate import ValidateConfig


# backbones.<b>.train_on.<dataset>: overrides of `train:` for one backbone on one dataset, read by
# Params.for_dataset (not part of the backbone's own config)
TRAIN_ON = "train_on"


class ParamsError(ValueError):
    """params.yaml or an override is invalid."""


class TrainConfig(StrictConfig):
    epochs: int = Field(1000, ge=0)
    batch_size: int = Field(2048, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(20, ge=1)
    valid_metric: str = "recall@20"
    embedding_dim: int = Field(64, ge=1)
    eval_batch_size: int = Field(4096, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress: bool = True

    @field_validator("valid_metric")
    @classmethod
    def known_metric(cls, value: str) -> str:
        if value not in metric_names():
            raise ValueError(f"unknown metric {value!r}; expected one of {metric_names()}")
        return value


class DataConfig(StrictConfig):
    standin_features: bool = False  # fill missing feature files with seeded noise (flagged everywhere)


class DatasetConfig(StrictConfig):
    """One dataset of the pipeline: where it comes from and what differs when training on it."""

    download: DownloadConfig
    features: FeaturesConfig | None = None  # None: the download already holds the feature files
    train: dict[str, Any] = Field(default_factory=dict)  # overrides of `train:` for this dataset

    @field_validator("train")
    @classmethod
    def known_train_keys(cls, value: dict) -> dict:
        TrainConfig(**value)  # unknown keys and wrong types fail here, not at training time
        return value


class PipelineConfig(StrictConfig):
    datasets: list[str] = ["synthetic"]      # names in `datasets:`
    backbones: list[str] = ["vbpr"]          # multimodal backbones, trained base and mrdib
    references: list[str] = []               # ID-only references (pop, bprmf, lightgcn), base only
    seeds: list[int] = Field([2025, 2026, 2027, 2028, 2029], min_length=1)  # never `seed`: it tunes
    variants: list[Literal["base", "mrdib"]] = ["base", "mrdib"]  # variants trained per backbone
    ablation_backbones: list[str] = []       # backbones of the ablation (Table 2)
    ablations: list[str] = list(ABLATIONS)   # settings of the ablation (models.mrdib.ABLATIONS)
    bootstrap: int = Field(1000, ge=10)      # resamples of the two-way (seeds x users) paired bootstrap

    @field_validator("seeds")
    @classmethod
    def distinct_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"pipeline.seeds repeats a seed: {value}")
        return value


class SweepGrid(StrictConfig):
    """One grid of the sweep (tasks/sweep.py): a base point, and values each varied alone around it."""

    base: dict[str, Any] = Field(default_factory=dict)        # `synthetic:` keys set at the base point
    vary: dict[str, list[Any]] = Field(default_factory=dict)  # `synthetic:` key -> values, one point each


class SweepConfig(StrictConfig):
    """The sweep stage (tasks/sweep.py): base vs MRdIB across synthetic knobs, paired per seed."""

    backbones: list[str] = ["vbpr", "dualgnn"]  # multimodal backbones, each trained base and mrdib per point and seed
    seeds: list[int] = Field([11, 12, 13], min_length=2)  # seed s generates the data and trains both variants
    epochs: int = Field(40, ge=1)              # epoch cap of every model (the dataset's patience stays)
    workers: int = Field(2, ge=1)              # models trained at once, one torch thread each
    grid: str = "small"                        # which of `grids` runs
    grids: dict[str, SweepGrid] = Field(default_factory=lambda: {"small": SweepGrid()})

    @model_validator(mode="after")
    def check(self) -> "SweepConfig":
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"sweep.seeds repeats a seed: {self.seeds}")
        wrong = [b for b in self.backbones if b not in BACKBONES or not BACKBONES[b].modalities]
        if wrong or not self.backbones:
            raise ValueError(f"sweep.backbones: {wrong or 'none'} not multimodal backbones; multimodal: "
                             f"{sorted(b for b, c in BACKBONES.items() if c.modalities)}")
        if self.grid not in self.grids:
            raise ValueError(f"sweep.grid: {self.grid!r} is not one of sweep.grids {sorted(self.grids)}")
        for name, grid in self.grids.items():
            unknown = sorted((set(grid.base) | set(grid.vary)) - set(SyntheticConfig.model_fields))
            if unknown:
                raise ValueError(f"sweep.grids.{name}: {unknown} are not `synthetic:` keys; known: "
                                 f"{sorted(SyntheticConfig.model_fields)}")
        return self

    def points(self, synthetic: SyntheticConfig) -> list[tuple[str | None, Any, SyntheticConfig]]:
        """(knob, value, data config) of the chosen grid: (None, None, base) first, then each value of each
        knob of `vary` with every other key at the base point (values equal to the base's are skipped)."""
        grid = self.grids[self.grid]
        where = f"sweep.grids.{self.grid}"

        def config(extra: dict, what: str) -> SyntheticConfig:
            try:
                return SyntheticConfig(**(synthetic.model_dump() | grid.base | extra))
            except ValidationError as err:
                raise ValueError(f"{what}: " + "; ".join(map(describe, err.errors()))) from None

        base = config({}, f"{where}.base")
        points = [(None, None, base)]
        for knob, values in grid.vary.items():
            if getattr(base, knob) is None:
                raise ValueError(f"{where}.vary.{knob}: the base point has no value of {knob} (set it in "
                                 f"{where}.base), so its line would have no base point")
            points += [(knob, value, config({knob: value}, f"{where}.vary.{knob}={value}"))
                       for value in values if value != getattr(base, knob)]
        return points


class TuneConfig(StrictConfig):
    """The tune stage (tasks/tune.py): Optuna over each variant, equal budgets, on the validation metric only."""

    backbones: list[str] = ["vbpr"]            # backbones tuned (base and mrdib alike); the others: budget 0
    n_trials: int = Field(8, ge=0)             # finished (complete + pruned) trials per study; 0: no tuning
    epochs: int | None = Field(40, ge=1)       # epoch cap of one trial; None: train.epochs
    alpha_low: float = Field(1e-4, gt=0)       # log-uniform range of alpha1, alpha2, alpha3
    alpha_high: float = Field(1e-1, gt=0)
    tune_lr: bool = True                       # the learning rate (log-uniform [lr_low, lr_high]), both variants
    lr_low: float = Field(1e-4, gt=0)
    lr_high: float = Field(3e-2, gt=0)
    tune_reg: bool = True                      # reg_weight (else train.weight_decay), both variants
    reg_low: float = Field(1e-6, gt=0)
    reg_high: float = Field(1.0, gt=0)
    startup_trials: int = Field(5, ge=1)       # random trials before TPE models the space
    pruner_startup_trials: int = Field(5, ge=0)  # trials completed before any trial may be pruned
    pruner_warmup_epochs: int = Field(10, ge=0)  # a trial is never pruned before this epoch
    timeout_s: float | None = Field(None, gt=0)  # stop starting trials after this many seconds
    storage: str = "sqlite:///mlruns/optuna.db"  # Optuna storage; relative sqlite paths: from the repo root

    @model_validator(mode="after")
    def check_ranges(self) -> "TuneConfig":
        for low, high in (("alpha_low", "alpha_high"), ("lr_low", "lr_high"), ("reg_low", "reg_high")):
            if getattr(self, low) >= getattr(self, high):
                raise ValueError(f"tune.{low} must be below tune.{high}")
        wrong = [b for b in self.backbones if b not in BACKBONES or not BACKBONES[b].modalities]
        if wrong:
            raise ValueError(f"tune.backbones: {wrong} are not multimodal backbones; multimodal: "
                             f"{sorted(b for b, c in BACKBONES.items() if c.modalities)}")
        return self


class Params(StrictConfig):
    seed: int = 2024
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    mrdib: MRdIBConfig = MRdIBConfig()
    backbones: dict[str, dict[str, Any]] = Field(default_factory=dict)
    synthetic: SyntheticConfig = SyntheticConfig()
    filter: FilterConfig = FilterConfig()
    # `validate:` in params.yaml; the field is named otherwise because BaseModel.validate exists
    validation: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    datasets: dict[str, DatasetConfig] = Field(default_factory=dict)
    pipeline: PipelineConfig = PipelineConfig()
    tracking: TrackingConfig = TrackingConfig()
    tune: TuneConfig = TuneConfig()
    sweep: SweepConfig = SweepConfig()

    @model_validator(mode="after")
    def check_sweep(self) -> "Params":
        if self.seed in self.sweep.seeds:
            raise ValueError(f"sweep.seeds contains {self.seed}, the seed that tunes (`seed`): the sweep's seeds "
                             f"must differ from it")
        self.sweep.points(self.synthetic)  # every point of the chosen grid is a valid `synthetic:` config
        return self

    @model_validator(mode="after")
    def check_validate(self) -> "Params":
        unknown = sorted(set(self.validation.datasets) - set(self.datasets))
        if unknown:
            raise ValueError(f"validate.datasets: {unknown} not defined under datasets: {sorted(self.datasets)}")
        return self

    @model_validator(mode="after")
    def check_pipeline(self) -> "Params":
        unknown = [d for d in self.pipeline.datasets if d not in self.datasets]
        if unknown:
            raise ValueError(f"pipeline.datasets: {unknown} not defined under datasets: {sorted(self.datasets)}")
        unknown = [a for a in self.pipeline.ablations if a not in ABLATIONS]
        if unknown:
            raise ValueError(f"pipeline.ablations: unknown setting(s) {unknown}; known: {sorted(ABLATIONS)}")
        for key in ("backbones", "references", "ablation_backbones"):
            names = [b for b in getattr(self.pipeline, key) if b not in BACKBONES]
            if names:
                raise ValueError(f"pipeline.{key}: unknown backbone(s) {names}; known: {sorted(BACKBONES)}")
        return self

    def report_seeds(self) -> list[int]:
        """pipeline.seeds, checked to differ from `seed` (the seed that tunes: a reported run must not
        be the very run that tuning selected on)."""
        if self.seed in self.pipeline.seeds:
            raise ParamsError(f"pipeline.seeds contains {self.seed}, the seed that tunes (`seed`): the seeds "
                              f"that report must differ from it")
        return self.pipeline.seeds

    def train_overrides(self, dataset: str, backbone: str | None = None) -> dict[str, Any]:
        """The `train:` keys that `datasets.<dataset>.train` overrides, then those that
        `backbones.<backbone>.train_on.<dataset>` overrides (these win)."""
        on_dataset = self.datasets[dataset].train if dataset in self.datasets else {}
        for_backbone = ((self.backbones.get(backbone) or {}).get(TRAIN_ON) or {}).get(dataset) or {}
        return on_dataset | for_backbone

    def for_dataset(self, dataset: str, backbone: str | None = None) -> "Params":
        """These params with train_overrides(dataset, backbone) applied (global -> dataset -> backbone on it)."""
        overrides = self.train_overrides(dataset, backbone)
        if not overrides:
            return self
        train = self.train.model_copy(update=overrides)
        return self.model_copy(update={"train": TrainConfig(**train.model_dump())})

    @model_validator(mode="after")
    def check_backbones(self) -> "Params":
        for name, values in self.backbones.items():
            if name not in BACKBONES:
                raise ValueError(f"backbones.{name}: unknown backbone; known: {sorted(BACKBONES)}")
            values = dict(values or {})
            for dataset, overrides in (values.pop(TRAIN_ON, None) or {}).items():
                where = f"backbones.{name}.{TRAIN_ON}.{dataset}"
                if dataset not in self.datasets:
                    raise ValueError(f"{where}: not defined under datasets: {sorted(self.datasets)}")
                try:
                    TrainConfig(**(overrides or {}))  # unknown keys and wrong types fail here, naming the key
                except ValidationError as err:
                    raise ValueError("; ".join(f"{where}.{describe(e)}" for e in err.errors())) from None
            BACKBONES[name].Config(**values)
        return self

    def backbone_config(self, name: str) -> StrictConfig:
        values = {k: v for k, v in (self.backbones.get(name) or {}).items() if k != TRAIN_ON}
        return BACKBONES[name].Config(**values)


def apply_override(raw: dict, assignment: str) -> None:
    """Set `a.b.c=value` in the nested dict; the key must already exist."""
    key, sep, text = assignment.partition("=")
    if not sep:
        raise ParamsError(f"override {assignment!r}: expected KEY=VALUE")
    node, parts = raw, key.strip().split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:depth]) or "the top level"
            known = sorted(node) if isinstance(node, dict) else []
            raise ParamsError(f"override {assignment!r}: unknown key {key!r}; keys under {where}: {known}")
        if depth == len(parts) - 1:
            node[part] = yaml.safe_load(text)
        else:
            node = node[part]


def load_params(path: str | Path = "params.yaml", overrides: list[str] = ()) -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ParamsError(f"{path}: cannot read params: {err}") from err
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        return Params(**raw)
    except ValidationError as err:
        raise ParamsError(f"{path}: {'; '.join(map(describe, err.errors()))}") from None


def describe(error: dict) -> str:
    """One pydantic error as `key.path: message` (a model-level check names its key in the message)."""
    message = error["msg"].removeprefix("Value error, ")
    return f"{'.'.join(map(str, error['loc']))}: {message}" if error["loc"] else message


def dataset_config(params: Params, name: str) -> DatasetConfig:
    if name not in params.datasets:
        raise ParamsError(f"dataset {name!r} is not defined under `datasets:` in params.yaml; "
                          f"defined: {sorted(params.datasets)}")
    return params.datasets[name]
