"""Speed benchmark (a script, not a test): evaluation and training on real Baby interactions.

    .venv/bin/python -m benchmarks.speed [--data-dir ../shared/data/amazon/baby] [--epochs 2]

Prints
- seconds for one full evaluation (valid + test, every item ranked for every user) of a
  random 64-d model, against the bare matrix-product floor measured in the same run
  (19,445 x 7,050 x 64 ~ 8.8 GFLOP), and the peak RSS growth against one user batch;
- seconds per training epoch of every trainable backbone, base and MRdIB, with stand-in
  features (the real ones are not on these machines), with MRdIB's overhead in %.
The reference toolbox figures on these 2 cores (from the issue): 1 s/epoch BPR-MF,
3.3 s LightGCN, 6.9 s VBPR, 4.3 s per full evaluation.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from models.data import load_dataset
from models.evaluation import Evaluator
from models.registry import BACKBONES
from models.trainer import Trainer, TrainSettings, seed_everything
from tasks.config import load_params
from tasks.train import build_model

REFERENCE_SECONDS = {"bprmf": 1.0, "lightgcn": 3.3, "vbpr": 6.9, "evaluation": 4.3}


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
    except OSError:
        pass


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_evaluation(data, batch_size: int) -> None:
    gen = torch.Generator().manual_seed(0)
    users, items = torch.randn(data.n_users, 64, generator=gen), torch.randn(data.n_items, 64, generator=gen)
    evaluator = Evaluator(data.n_users, data.n_items, data.train, {"valid": data.valid, "test": data.test},
                          batch_size=batch_size)
    score = lambda batch: users[batch] @ items.T  # noqa: E731
    floor = best_of(3, lambda: users @ items.T)
    reset_peak_rss()
    before = peak_rss_mb()
    full = best_of(3, lambda: evaluator.evaluate(score, ("valid", "test")))
    growth = peak_rss_mb() - before
    batch_mb = batch_size * data.n_items * (4 + 1) / 2**20  # float scores + bool targets per batch
    dense_mb = data.n_users * data.n_items * 4 / 2**20
    print(f"full evaluation (valid+test), {data.n_users} users x {data.n_items} items, batch {batch_size}:")
    print(f"  {full:.3f} s  = {full / floor:.1f}x the matrix-product floor ({floor:.3f} s, "
          f"{data.n_users * data.n_items * 64 / 1e9:.1f} G multiply-adds) ; reference toolbox 4.3 s -> "
          f"{full / REFERENCE_SECONDS['evaluation']:.2f}x")
    print(f"  peak RSS growth {growth:.0f} MB (one user batch ~{batch_mb:.0f} MB; a dense users x items "
          f"score matrix would be {dense_mb:.0f} MB)")


def bench_training(data, epochs: int, names: list[str]) -> None:
    params = load_params("params.yaml", ["train.progress=false"])
    evaluator = Evaluator(data.n_users, data.n_items, data.train, {"valid": data.valid})
    settings = TrainSettings(epochs=epochs, batch_size=params.train.batch_size, lr=params.train.lr,
                             patience=10**6, valid_metric="recall@20", progress=False)
    print(f"\nseconds per training epoch (mean of epochs 2..{epochs}, epoch 1 is warm-up):")
    print("| backbone | base s/epoch | mrdib s/epoch | mrdib overhead | base vs reference |")
    print("|---|---|---|---|---|")
    for name in names:
        cls = BACKBONES[name]
        if not cls.trainable:
            continue
        seconds = {}
        for variant in ("base", "mrdib") if cls.modalities else ("base",):
            seed_everything(params.seed)
            started = time.perf_counter()
            model = build_model(params, data, name, variant, torch.device("cpu"))
            build = time.perf_counter() - started
            trainer = Trainer(model, data.train, evaluator, settings, Path("/tmp/bench-ckpt"), params.seed)
            model.train()
            times = []
            for epoch in range(1, epochs + 1):
                times.append(best_of(1, lambda: trainer.train_epoch(epoch)))
            seconds[variant] = sum(times[1:]) / max(len(times) - 1, 1)
        base, mrdib = seconds["base"], seconds.get("mrdib")
        print(f"  ({name}: model and graphs built in {build:.1f} s, peak RSS so far {peak_rss_mb():.0f} MB)")
        overhead = f"{100 * (mrdib / base - 1):+.1f}%" if mrdib else "n/a"
        reference = f"{base / REFERENCE_SECONDS[name]:.2f}x of {REFERENCE_SECONDS[name]} s" \
            if name in REFERENCE_SECONDS else "n/a"
        print(f"| {name} | {base:.3f} | {f'{mrdib:.3f}' if mrdib else 'n/a'} | {overhead} | {reference} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/amazon/baby"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--eval-batch-size", type=int, default=4096)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), help="default: all")
    args = parser.parse_args()
    data = load_dataset(args.data_dir, standin=True, seed=0)
    print(data.summary(), f"| torch threads: {torch.get_num_threads()}")
    bench_evaluation(data, args.eval_batch_size)
    if not args.skip_training:
        bench_training(data, args.epochs, args.backbones)


if __name__ == "__main__":
    main()
