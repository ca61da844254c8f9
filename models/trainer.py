"""The one training loop: BPR triples, Adam, early stopping on validation, resumable.

Protocol (spec, section 4): one uniform negative per positive, drawn from the train items
that are not the user's positives; early stopping on the validation metric with patience;
test evaluated once, at the end, on the best-validation checkpoint.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.base import Recommender
from models.evaluation import Evaluator
from models.optim import Adam

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or inf."""


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    patience: int
    valid_metric: str
    weight_decay: float = 0.0
    progress: bool = True
    checkpoint_seconds: float = 0.0  # last.pt: after the first epoch, then at most this often, and at the end


class CheckpointRefused(RuntimeError):
    """A checkpoint that cannot be loaded safely (weights_only): refused, never executed or replaced."""


@dataclass
class TrainState:
    """Everything needed to resume: saved after every epoch."""

    epoch: int = 0                              # epochs finished
    best_epoch: int = 0
    best_score: float = -math.inf
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)  # per epoch: loss terms, valid metrics, seconds


class NegativeSampler:
    """Uniform negatives from the train items, rejecting the user's own positives (vectorised)."""

    def __init__(self, train: np.ndarray, n_items: int, rng: np.random.Generator):
        self.n_items, self.rng = n_items, rng
        self.candidates = np.unique(train[:, 1])                    # items seen in train
        self.positive_keys = np.unique(train[:, 0] * n_items + train[:, 1])  # sorted user*n+item

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        where = np.searchsorted(self.positive_keys, keys).clip(max=len(self.positive_keys) - 1)
        return self.positive_keys[where] == keys

    def sample(self, users: np.ndarray) -> np.ndarray:
        negatives = self.candidates[self.rng.integers(len(self.candidates), size=len(users))]
        redo = np.flatnonzero(self.is_positive(users, negatives))
        while len(redo):  # a user's positives are a small share of items: this ends in a few rounds
            negatives[redo] = self.candidates[self.rng.integers(len(self.candidates), size=len(redo))]
            redo = redo[self.is_positive(users[redo], negatives[redo])]
        return negatives


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # Scatter-adds (embedding backward) are otherwise free to sum in thread order: same seed,
    # different last bits. CUBLAS needs a fixed workspace for the same guarantee on a GPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch.use_deterministic_algorithms would also set a flag of the compiler, importing it (~1.6 s per
    # process); the trainer never compiles, so the eager flag is the whole of it.
    torch._C._set_deterministic_algorithms(True, warn_only=True)


def keep_freed_memory() -> None:
    """Lets glibc's malloc reuse freed large blocks instead of returning each to the kernel.

    By default a block of more than 32 MB is its own mmap: freed at once, it is mapped again (and
    page-faulted in, page by page) at the next step. A training step makes such blocks every
    time (VBPR's gather of the batch's 4096-d image rows is ~50 MB), so that the faults cost more
    than the arithmetic: the gather took 30 ms, 4.5 ms with this (benchmarks/speed.py measures
    the whole effect). Peak memory is unchanged: the process only keeps what it already used.
    A no-op where the C library has no mallopt (not glibc)."""
    import ctypes
    import ctypes.util

    library = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(library), "mallopt", None) if library else None
    if mallopt is not None:
        mallopt(-3, 1 << 30)        # M_MMAP_THRESHOLD: blocks up to 1 GB come from the heap
        mallopt(-1, (1 << 31) - 1)  # M_TRIM_THRESHOLD: never shrink the heap after a free


class Trainer:
    """Trains one model; `fit` returns (best valid metrics, test metrics, state)."""

    def __init__(self, model: Recommender, train: np.ndarray, evaluator: Evaluator, settings: TrainSettings,
                 checkpoint_dir: Path, seed: int, fingerprint: str = "",
                 on_epoch: Callable[[int, dict], None] | None = None):
        """fingerprint: identifies the configuration; a checkpoint of another one is not resumed."""
        keep_freed_memory()
        self.model, self.train, self.evaluator, self.settings = model, train, evaluator, settings
        self.dir, self.on_epoch = Path(checkpoint_dir), on_epoch
        # The model's parameter layout and the optimizer's state format are part of the identity: a
        # checkpoint written by older code with other parameters (or torch.optim's state) starts afresh
        # instead of failing to load.
        layout = ";".join([f"{Adam.__module__}.{Adam.__name__}"]
                          + [f"{name}:{tuple(t.shape)}" for name, t in model.state_dict().items()])
        self.fingerprint = f"{fingerprint}|{hashlib.sha256(layout.encode()).hexdigest()[:16]}"
        self.device = model.ctx.device
        self.rng = np.random.default_rng([seed, 17])
        self.sampler = NegativeSampler(train, model.ctx.n_items, self.rng)
        params = [p for p in model.parameters() if p.requires_grad]
        # fused: one kernel over every tensor per step, where the default for-loop Adam on CPU
        # makes several passes per tensor (measurements: docs/experiments.md).
        self.optimizer = Adam(params, lr=settings.lr, weight_decay=settings.weight_decay) \
            if params and model.trainable else None
        self.state = TrainState()

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.dir / "best.pt"

    def save_last(self) -> None:
        payload = {"fingerprint": self.fingerprint, "model": self.model.state_dict(),
                   "optimizer": self.optimizer.state_dict(),
                   "state": self.state.__dict__, "numpy_rng": self.rng.bit_generator.state,
                   "torch_rng": torch.get_rng_state(),
                   "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        atomic_torch_save(payload, self.last_path)

    def try_resume(self) -> bool:
        if not self.last_path.exists() or self.optimizer is None:
            return False
        try:  # tensors and plain values only: a planted pickle must never run
            payload = torch.load(self.last_path, map_location=self.device, weights_only=True)
        except pickle.UnpicklingError as err:
            raise CheckpointRefused(
                f"{self.last_path}: refused to resume: it holds objects other than tensors and plain values "
                f"(not written by this trainer?); it was not loaded and is left in place: inspect or delete it. "
                f"({str(err).splitlines()[0]})") from None
        if payload.get("fingerprint") != self.fingerprint:
            log.warning("%s was written by another configuration: starting afresh", self.last_path)
            self.best_path.unlink(missing_ok=True)
            return False
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = TrainState(**payload["state"])
        self.rng.bit_generator.state = payload["numpy_rng"]
        # RNG states are CPU byte tensors whatever the device: map_location moved them along with the model
        torch.set_rng_state(payload["torch_rng"].cpu())
        if payload["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([state.cpu() for state in payload["cuda_rng"]])
        log.info("resumed from %s after epoch %d (best %s %.4f at epoch %d)", self.last_path, self.state.epoch,
                 self.settings.valid_metric, self.state.best_score, self.state.best_epoch)
        return True

    # -- training ----------------------------------------------------------------------------
    def fit(self) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Train with early stopping, then evaluate valid and test once on the best checkpoint.

        Returns Evaluator.per_user's result for "valid" and "test" (per-user values, for
        paired tests); `models.evaluation.summarize` turns it into means.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.optimizer is not None:
            self.run_epochs()
            if self.best_path.exists():
                self.model.load_state_dict(torch.load(self.best_path, map_location=self.device, weights_only=True))
        else:
            atomic_torch_save(self.model.state_dict(), self.best_path)
        self.model.eval()
        self.model.prepare_eval()
        return self.evaluator.per_user(self.model.full_scores, ("valid", "test"))

    def run_epochs(self) -> None:
        """The one training loop (fit and the tuner's trials alike): resume from last.pt when there is
        one, then epochs until the epoch cap or `patience` epochs without a better validation score."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.try_resume()
        saved = None  # last.pt costs a write of every parameter and Adam moment (FREEDOM: ~400 MB on Baby)
        # an epoch bar on a terminal (none in logs): its ETA is to the epoch cap, early stopping comes sooner
        bar = tqdm(total=self.settings.epochs, initial=self.state.epoch, unit="epoch", desc="training",
                   disable=None if self.settings.progress else True, dynamic_ncols=True, leave=False)
        while self.state.epoch < self.settings.epochs and self.state.bad_epochs < self.settings.patience:
            self.run_epoch()
            bar.update(1)
            bar.set_postfix({f"best {self.settings.valid_metric}": f"{self.state.best_score:.4f}",
                             "at": self.state.best_epoch}, refresh=False)
            finished = self.state.epoch >= self.settings.epochs or self.state.bad_epochs >= self.settings.patience
            if saved is None or finished or time.monotonic() - saved >= self.settings.checkpoint_seconds:
                self.save_last()  # a resume from an older one replays the epochs since, with their RNG states
                saved = time.monotonic()
        bar.close()

    def run_epoch(self) -> None:
        epoch = self.state.epoch + 1
        started = time.perf_counter()  # the epoch's own graph work (FREEDOM's pruning) counts too
        self.model.train()
        self.model.on_epoch_start(epoch)
        lr = self.settings.lr * self.model.lr_factor(epoch)  # from the epoch alone: a resumed run agrees
        self.optimizer.lr = lr
        terms = self.train_epoch(epoch)
        seconds = time.perf_counter() - started
        self.model.eval()
        self.model.prepare_eval()
        valid = self.evaluator.evaluate(self.model.full_scores, ("valid",))["valid"]
        record = {"epoch": epoch, "seconds": seconds, "lr": lr, **{f"loss/{k}": v for k, v in terms.items()},
                  **{f"valid/{k}": v for k, v in valid.items()}}
        self.state.history.append(record)
        score = valid[self.settings.valid_metric]
        if score > self.state.best_score:
            self.state.best_score, self.state.best_epoch, self.state.bad_epochs = score, epoch, 0
            atomic_torch_save(self.model.state_dict(), self.best_path)
        else:
            self.state.bad_epochs += 1
        self.state.epoch = epoch
        log.info("epoch %d  %s  valid %s %.4f (best %.4f @ %d)  %.2fs", epoch,
                 " ".join(f"{k} {v:.4f}" for k, v in terms.items()), self.settings.valid_metric, score,
                 self.state.best_score, self.state.best_epoch, seconds)
        if self.on_epoch is not None:
            self.on_epoch(epoch, record)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the shuffled train pairs; returns mean loss terms."""
        sums: dict[str, float] = {}
        batches = self.epoch_batches()
        bar = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=None if self.settings.progress else True,
                   mininterval=1.0, dynamic_ncols=True)
        for index, (u, p, n) in enumerate(bar):
            terms = self.train_step(u, p, n, epoch, index)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            bar.set_postfix({k: f"{v / (index + 1):.4f}" for k, v in sums.items()}, refresh=False)
        return {name: value / len(batches) for name, value in sums.items()}

    def epoch_batches(self) -> list[torch.Tensor]:
        """The epoch's (users, positives, negatives) batches: shuffled pairs, one fresh negative each."""
        order = self.rng.permutation(len(self.train))
        users, positives = self.train[order, 0], self.train[order, 1]
        negatives = self.sampler.sample(users)
        triples = torch.as_tensor(np.stack([users, positives, negatives]), device=self.device)  # [3, n]
        return list(triples.split(self.settings.batch_size, dim=1))

    def train_step(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, epoch: int = 0,
                   batch: int = 0) -> dict[str, torch.Tensor]:
        """One optimiser step on a batch; returns its loss terms (epoch, batch: for error messages)."""
        terms = self.model.calculate_loss(users, pos, neg)
        total = check_finite(terms, epoch, batch)
        self.optimizer.zero_grad()
        total.backward()
        self.optimizer.step()
        return terms


def check_finite(terms: dict[str, torch.Tensor], epoch: int, batch: int) -> torch.Tensor:
    """Sum of the terms; a NaN or inf term stops the run with an error naming it."""
    values = torch.stack(list(terms.values()))
    if not torch.isfinite(values).all():
        bad = {name: float(v) for name, v in terms.items() if not torch.isfinite(v)}
        raise NonFiniteLossError(f"non-finite loss term(s) {bad} at epoch {epoch}, batch {batch}; "
                                 f"all terms: { {k: float(v) for k, v in terms.items()} }")
    return values.sum()


def atomic_torch_save(obj, path: Path) -> None:
    """Write to a temporary name, then rename: a killed run never leaves a torn file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
