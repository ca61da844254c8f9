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
from models.mrdib import MRdIBConfig
from models.registry import BACKBONES
from tasks.download import DownloadConfig
from tasks.features import FeaturesConfig
from tasks.filter import FilterConfig
from tasks.synthetic import SyntheticConfig


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
    seeds: list[int] = [2024]
    ablation_backbones: list[str] = []       # backbones of the ablation (Table 2)
    bootstrap: int = Field(1000, ge=10)      # resamples of the paired bootstrap


class Params(StrictConfig):
    seed: int = 2024
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    mrdib: MRdIBConfig = MRdIBConfig()
    backbones: dict[str, dict[str, Any]] = Field(default_factory=dict)
    synthetic: SyntheticConfig = SyntheticConfig()
    filter: FilterConfig = FilterConfig()
    datasets: dict[str, DatasetConfig] = Field(default_factory=dict)
    pipeline: PipelineConfig = PipelineConfig()

    @model_validator(mode="after")
    def check_pipeline(self) -> "Params":
        unknown = [d for d in self.pipeline.datasets if d not in self.datasets]
        if unknown:
            raise ValueError(f"pipeline.datasets: {unknown} not defined under datasets: {sorted(self.datasets)}")
        for key in ("backbones", "references", "ablation_backbones"):
            names = [b for b in getattr(self.pipeline, key) if b not in BACKBONES]
            if names:
                raise ValueError(f"pipeline.{key}: unknown backbone(s) {names}; known: {sorted(BACKBONES)}")
        return self

    def for_dataset(self, name: str) -> "Params":
        """These params with the dataset's own `train:` overrides applied (global -> dataset)."""
        if name not in self.datasets or not self.datasets[name].train:
            return self
        train = self.train.model_copy(update=self.datasets[name].train)
        return self.model_copy(update={"train": TrainConfig(**train.model_dump())})

    @model_validator(mode="after")
    def check_backbones(self) -> "Params":
        for name, values in self.backbones.items():
            if name not in BACKBONES:
                raise ValueError(f"backbones.{name}: unknown backbone; known: {sorted(BACKBONES)}")
            BACKBONES[name].Config(**(values or {}))
        return self

    def backbone_config(self, name: str) -> StrictConfig:
        return BACKBONES[name].Config(**(self.backbones.get(name) or {}))


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
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ParamsError(f"{path}: {problems}") from None


def dataset_config(params: Params, name: str) -> DatasetConfig:
    if name not in params.datasets:
        raise ParamsError(f"dataset {name!r} is not defined under `datasets:` in params.yaml; "
                          f"defined: {sorted(params.datasets)}")
    return params.datasets[name]
