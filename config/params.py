"""params.yaml as typed, validated configuration (`Params`), with `--set key=value` overrides.

The leaf of the code base: imports neither a stage nor torch. Unknown keys (in the file or in an
override) and wrong types are errors that name the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from config.backbones import BACKBONES, BackboneConfig
from config.sections import (
    ABLATIONS,
    DataConfig,
    DatasetConfig,
    FilterConfig,
    MRdIBConfig,
    PipelineConfig,
    SweepConfig,
    SyntheticConfig,
    TrackingConfig,
    TrainConfig,
    TuneConfig,
    ValidateConfig,
)
from config.strict import ParamsError, StrictConfig, describe

# backbones.<b>.train_on.<dataset>: overrides of `train:` for one backbone on one dataset, read by
# Params.for_dataset (not part of the backbone's own config)
TRAIN_ON = "train_on"


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
    def check_sweep(self) -> Params:
        if self.seed in self.sweep.seeds:
            raise ValueError(f"sweep.seeds contains {self.seed}, the seed that tunes (`seed`): the sweep's seeds "
                             f"must differ from it")
        self.sweep.points(self.synthetic)  # every point of the chosen grid is a valid `synthetic:` config
        return self

    @model_validator(mode="after")
    def check_validate(self) -> Params:
        unknown = sorted(set(self.validation.datasets) - set(self.datasets))
        if unknown:
            raise ValueError(f"validate.datasets: {unknown} not defined under datasets: {sorted(self.datasets)}")
        return self

    @model_validator(mode="after")
    def check_pipeline(self) -> Params:
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

    def for_dataset(self, dataset: str, backbone: str | None = None) -> Params:
        """These params with train_overrides(dataset, backbone) applied (global -> dataset -> backbone on it)."""
        overrides = self.train_overrides(dataset, backbone)
        if not overrides:
            return self
        train = self.train.model_copy(update=overrides)
        return self.model_copy(update={"train": TrainConfig(**train.model_dump())})

    @model_validator(mode="after")
    def check_backbones(self) -> Params:
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
            BACKBONES[name](**values)
        return self

    def backbone_config(self, name: str) -> BackboneConfig:
        values = {k: v for k, v in (self.backbones.get(name) or {}).items() if k != TRAIN_ON}
        return BACKBONES[name](**values)



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



def dataset_config(params: Params, name: str) -> DatasetConfig:
    if name not in params.datasets:
        raise ParamsError(f"dataset {name!r} is not defined under `datasets:` in params.yaml; "
                          f"defined: {sorted(params.datasets)}")
    return params.datasets[name]
