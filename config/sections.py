"""Every section schema of params.yaml except the backbones' (config.backbones) and the whole (config.params).

Defaults here equal params.yaml's values (tests/unit/test_layout.py loads one against the other).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from config.backbones import MULTIMODAL
from config.metrics import metric_names
from config.strict import StrictConfig, describe

VARIANTS = ("base", "mrdib")  # every multimodal backbone is trained both ways
TEXT_DIM, IMAGE_DIM = 384, 4096  # the real feature files' widths: MiniLM sentence vectors, McAuley's CNN features


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
    checkpoint_seconds: float = Field(60.0, ge=0)  # last.pt after epoch 1, then at most this often, and at the end

    @field_validator("valid_metric")
    @classmethod
    def known_metric(cls, value: str) -> str:
        if value not in metric_names():
            raise ValueError(f"unknown metric {value!r}; expected one of {metric_names()}")
        return value


class DataConfig(StrictConfig):
    standin_features: bool = False  # fill missing feature files with seeded noise (flagged everywhere)


class MRdIBConfig(StrictConfig):
    alpha1: float = 0.005     # weight of the KL (information bottleneck) term
    alpha2: float = 0.05      # weight of the redundancy term I_hat(z_v; z_t)
    alpha3: float = 0.005     # weight of the unique-information term L_U
    critic_hidden: int = 64   # hidden width of the MINE critic T
    mine_clamp: float = 10.0  # |T| is clamped to this to keep exp(T) finite
    sigma_shift: float = 5.0  # sigma = softplus(W h - shift): small noise at start
    keep_encoder: bool = False  # build and train the encoders even with every alpha 0 (the encoder_only control)

    @property
    def active(self) -> bool:
        return self.keep_encoder or max(self.alpha1, self.alpha2, self.alpha3) > 0


# The paper's Table 2: each setting zeroes some of the three weights of the full objective.
ABLATIONS: dict[str, tuple[str, ...]] = {
    "no_kl": ("alpha1",),                 # without the information bottleneck
    "no_redundancy": ("alpha2",),         # without the MINE redundancy term
    "no_unique": ("alpha3",),             # without the unique-information heads
    "no_redundancy_unique": ("alpha2", "alpha3"),
    "encoder_only": ("alpha1", "alpha2", "alpha3"),  # the control: encoders kept, no MRdIB term
    # The tuning control: nothing of MRdIB is built, so this is the base backbone trained with the
    # values MRdIB's study chose (lr, regulariser). Base -> tuning_only is what the study's draw does,
    # tuning_only -> encoder_only what the layer does, encoder_only -> MRdIB what the objective does.
    "tuning_only": ("alpha1", "alpha2", "alpha3"),
}


KEEPS_ENCODER = {"encoder_only"}


def ablated(config: MRdIBConfig, setting: str) -> MRdIBConfig:
    """The config with the weights of an ABLATIONS setting set to 0 (encoder_only: encoders kept)."""
    if setting not in ABLATIONS:
        raise ValueError(f"unknown ablation {setting!r}; known: {sorted(ABLATIONS)}")
    return config.model_copy(update={name: 0.0 for name in ABLATIONS[setting]} |
                             {"keep_encoder": setting in KEEPS_ENCODER})


class FilterConfig(StrictConfig):
    k_core: int = Field(5, ge=3)  # every user and item keeps >= k interactions (>= 3: a train row per user)


AMAZON_FILES = {"reviews": "reviews_{category}_5.json.gz", "meta": "meta_{category}.json.gz",
                "images": "image_features_{category}.b"}


class DownloadConfig(StrictConfig):
    source: Literal["synthetic", "amazon2014", "prepared", "local", "movielens"]
    category: str | None = None  # amazon2014: the category in the file names, e.g. Baby, Sports_and_Outdoors
    urls: dict[str, str] = Field(default_factory=dict)  # amazon2014: reviews / meta / images; movielens: archive
    path: str | None = None      # prepared: folder or archive URL; local: folder; movielens: folder (tried first)
    sha256: dict[str, str] = Field(default_factory=dict)  # file name -> expected sha256 (optional)
    md5: dict[str, str] = Field(default_factory=dict)     # file name -> expected md5 (GroupLens publishes md5s)
    retries: int = Field(5, ge=0)       # extra attempts after a dropped connection or a 5xx
    backoff: float = Field(1.0, ge=0)   # seconds before the first retry, doubled each time
    timeout: float = Field(60.0, gt=0)  # seconds without data before an attempt fails

    @model_validator(mode="after")
    def check_source_fields(self) -> DownloadConfig:
        if self.source == "amazon2014":
            if not self.category:
                raise ValueError("source amazon2014 needs `category` (e.g. Baby)")
            unknown = set(self.urls) - set(AMAZON_FILES)
            if unknown or "reviews" not in self.urls:
                raise ValueError(f"source amazon2014: `urls` needs 'reviews' (and 'meta', 'images'); "
                                 f"known keys {sorted(AMAZON_FILES)}, got {sorted(self.urls)}")
        if self.source in ("prepared", "local") and not self.path:
            raise ValueError(f"source {self.source} needs `path` (a folder, or for prepared an archive URL)")
        if self.source == "movielens":
            if set(self.urls) - {"archive"}:
                raise ValueError(f"source movielens: `urls` takes only 'archive' (the GroupLens zip), "
                                 f"got {sorted(self.urls)}")
            if not self.path and not self.urls:
                raise ValueError("source movielens needs `path` (a folder of RecBole atomic files) "
                                 "and/or `urls.archive`")
        return self


class FeaturesConfig(StrictConfig):
    text: Literal["metadata", "keywords", "movielens", "standin"] = "metadata"  # where the item text comes from
    image: Literal["amazon2014", "standin"] = "amazon2014"         # where the image features come from
    keywords_file: str | None = None  # text keywords: tab-separated `itemID asin keywords`
    batch_size: int = Field(256, ge=1)        # texts per encoder batch
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto takes a GPU where one exists
    image_chunk: int = Field(2048, ge=1)      # .b records read at a time (2048 records = 32 MB)

    @model_validator(mode="after")
    def check_keywords(self) -> FeaturesConfig:
        if self.text == "keywords" and not self.keywords_file:
            raise ValueError("text: keywords needs `keywords_file`")
        return self


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


class SyntheticConfig(StrictConfig):
    n_users: int = Field(600, ge=10)
    n_items: int = Field(900, ge=60)
    unique_visual: int = Field(4, ge=0)    # factors only the image features carry
    unique_text: int = Field(4, ge=0)      # factors only the text features carry
    redundant: int = Field(4, ge=0)        # factors both carry
    synergistic: int = Field(2, ge=0)      # factors s = a_v * a_t
    nuisance_visual: int = Field(16, ge=0)  # clutter dimensions in the image latents
    nuisance_text: int = Field(16, ge=0)    # clutter dimensions in the text latents
    nuisance_scale: float = Field(2.0, ge=0)  # std of clutter relative to the factors' 1
    image_dim: int = Field(512, ge=1)
    text_dim: int = Field(384, ge=1)
    feature_noise: float = Field(0.1, ge=0)   # std of noise added after mixing
    preference_strength: float = Field(3.0, gt=0)  # scale of user-item affinity
    popularity_std: float = Field(0.5, ge=0)  # std of the item popularity bias
    mean_interactions: float = Field(12.0, ge=5)  # per user, at least 5
    # The sweep's knobs (tasks/sweep.py); at their defaults the data is bit-identical to the linear generator's.
    nonlinearity: float = Field(0.0, ge=0, le=1)  # share of the non-linear mix in the features (0: linear only)
    nonlinear_gain: float = Field(1.0, gt=0)      # scale of the non-linear mix's pre-activations (tanh saturation)
    interactions_per_item: float | None = Field(None, gt=0)  # target mean per item: sets n_items (None: n_items)

    @model_validator(mode="after")
    def check_items(self) -> SyntheticConfig:
        if self.items() < 60:
            raise ValueError(f"interactions_per_item {self.interactions_per_item} leaves {self.items()} items "
                             f"for {self.n_users} users x {self.mean_interactions}: at least 60 needed")
        return self

    def items(self) -> int:
        """Items drawn: n_items, or n_users * mean_interactions / interactions_per_item when that is set."""
        if self.interactions_per_item is None:
            return self.n_items
        return int(round(self.n_users * self.mean_interactions / self.interactions_per_item))

    def resolved(self) -> SyntheticConfig:
        """This config with n_items = items() (what item_latents and sample_interactions read)."""
        return self if self.items() == self.n_items else self.model_copy(update={"n_items": self.items()})


class ValidateOverrides(StrictConfig):
    """Per-dataset values of the keys below (unset: the global value)."""

    text_dim: int | None = Field(None, ge=1)
    image_dim: int | None = Field(None, ge=1)
    user_k_core: int | None = Field(None, ge=1)
    item_k_core: int | None = Field(None, ge=1)


class ValidateConfig(StrictConfig):
    text_dim: int = Field(TEXT_DIM, ge=1)      # columns of text_feat.npy
    image_dim: int = Field(IMAGE_DIM, ge=1)    # columns of image_feat.npy
    user_k_core: int | None = Field(None, ge=1)  # >= interactions per user; None: filter.k_core
    item_k_core: int | None = Field(None, ge=1)  # >= interactions per item; None: filter.k_core
    sample_rows: int = Field(5, ge=1)          # offending rows kept per failed expectation
    datasets: dict[str, ValidateOverrides] = Field(default_factory=dict)  # name -> overrides

    def for_dataset(self, name: str, k_core: int) -> ValidateConfig:
        """The values for one dataset: its overrides applied, k-cores resolved, no `datasets`."""
        values = self.model_dump(exclude={"datasets"})
        values |= self.datasets[name].model_dump(exclude_none=True) if name in self.datasets else {}
        values["user_k_core"] = values["user_k_core"] or k_core
        values["item_k_core"] = values["item_k_core"] or k_core
        return ValidateConfig(**values)


class TrackingConfig(StrictConfig):
    enabled: bool = True                          # log every training run to MLflow
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_location: str = "mlruns/artifacts"   # root of the experiments' artifact folders
    # `register:` in params.yaml (the name shadows BaseModel.register): register every logged model
    register_models: bool = Field(True, alias="register")
    log_model: bool = True                        # log the pickled model with its signature


class PipelineConfig(StrictConfig):
    datasets: list[str] = ["synthetic"]      # names in `datasets:`
    backbones: list[str] = ["vbpr", "mmgcn", "dualgnn"]  # multimodal backbones, trained base and mrdib
    references: list[str] = ["pop", "bprmf", "lightgcn"]  # ID-only references, base only
    seeds: list[int] = Field([2025, 2026, 2027, 2028, 2029], min_length=1)  # never `seed`: it tunes
    variants: list[Literal[VARIANTS]] = list(VARIANTS)  # variants trained per backbone
    ablation_backbones: list[str] = ["vbpr"]  # backbones of the ablation (Table 2)
    # settings of Table 2 (ABLATIONS)
    ablations: list[str] = ["tuning_only", "encoder_only", "no_kl", "no_redundancy_unique"]
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
    def check(self) -> SweepConfig:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"sweep.seeds repeats a seed: {self.seeds}")
        wrong = [b for b in self.backbones if b not in MULTIMODAL]
        if wrong or not self.backbones:
            raise ValueError(f"sweep.backbones: {wrong or 'none'} not multimodal backbones; multimodal: "
                             f"{MULTIMODAL}")
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
    reg_low: float = Field(1e-6, gt=0)         # range of a backbone's own reg_weight
    reg_high: float = Field(1.0, gt=0)
    weight_decay_low: float = Field(1e-8, gt=0)   # range of Adam's weight decay (backbones without reg_weight):
    weight_decay_high: float = Field(1e-4, gt=0)  # it acts on every parameter at every step, not on the batch
    startup_trials: int = Field(5, ge=1)       # random trials before TPE models the space
    pruner_startup_trials: int = Field(5, ge=0)  # trials completed before any trial may be pruned
    pruner_warmup_epochs: int = Field(10, ge=0)  # a trial is never pruned before this epoch
    timeout_s: float | None = Field(None, gt=0)  # stop starting trials after this many seconds
    storage: str = "sqlite:///mlruns/optuna.db"  # Optuna storage; relative sqlite paths: from the repo root

    @model_validator(mode="after")
    def check_ranges(self) -> TuneConfig:
        for low, high in (("alpha_low", "alpha_high"), ("lr_low", "lr_high"), ("reg_low", "reg_high"),
                          ("weight_decay_low", "weight_decay_high")):
            if getattr(self, low) >= getattr(self, high):
                raise ValueError(f"tune.{low} must be below tune.{high}")
        wrong = [b for b in self.backbones if b not in MULTIMODAL]
        if wrong:
            raise ValueError(f"tune.backbones: {wrong} are not multimodal backbones; multimodal: "
                             f"{MULTIMODAL}")
        return self
