"""Startup benchmark (a script, not a test): seconds from a command's start to its first epoch.

    .venv/bin/python -m benchmarks.startup [--rounds 5] [--backbone vbpr] [--variant base] [--baseline DIR]

Makes the embedded synthetic dataset in a temporary folder, then starts `python -m tasks.train ...
--epochs 1` again and again, tracking off and tracking on (MLflow in a fresh sqlite store there), and,
alternated with them, `python -c "import torch"`: the floor no command that trains can go below, measured
in the same run. After one warm-up round of each (imports warm in the OS cache), it prints the median
seconds from spawn to the model being built (the "... parameters, device ..." line), to the end of the
first epoch (the "epoch 1" line) and to exit, and each against the floor. --baseline DIR: also the same
`tasks.train` commands run from another checkout (an older commit: `git worktree add DIR <commit>`),
alternated with ours in the same rounds, so that a before/after comparison sees the same machine load.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.errors import run_command

ROOT = Path(__file__).resolve().parents[1]
MARKS = {"built": "parameters, device", "first epoch": "INFO epoch 1 "}


def run(command: list[str], env: dict[str, str], cwd: Path = ROOT) -> dict[str, float]:
    """Seconds from spawn to each mark's first line of output, and to exit."""
    started = time.perf_counter()
    seen: dict[str, float] = {}
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            for mark, text in MARKS.items():
                if mark not in seen and text in line:
                    seen[mark] = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{''.join(lines[-20:])}")
    return {**seen, "exit": time.perf_counter() - started}


def make_dataset(folder: Path, env: dict[str, str]) -> Path:
    python = [sys.executable, "-m"]
    steps = [["tasks.download", "--dataset", "synthetic", "--root", str(folder / "raw"),
              "--partial", str(folder / "partial"), "--no-progress"],
             ["tasks.filter", "--dataset", "synthetic", "--raw", str(folder / "raw/synthetic"),
              "--out", str(folder / "prepared"), "--stats", str(folder / "prepared/filter.json")],
             ["tasks.features", "--dataset", "synthetic", "--raw", str(folder / "raw/synthetic"),
              "--out", str(folder / "prepared"), "--no-progress"]]
    for step in steps:
        subprocess.run(python + step, cwd=ROOT, env=env, check=True, capture_output=True)
    return folder / "prepared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed starts of each command (after one warm-up)")
    parser.add_argument("--backbone", default="vbpr")
    parser.add_argument("--variant", default="base", choices=["base", "mrdib"])
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="another checkout whose tasks.train runs alternated with ours (before/after)")
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "tasks" / "train.py").is_file():
        raise SystemExit(f"--baseline {args.baseline}: not a checkout of this repository (no tasks/train.py)")
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        folder = Path(tmp)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        data = make_dataset(folder, env)
        train = [sys.executable, "-m", "tasks.train", "--data-dir", str(data), "--backbone", args.backbone,
                 "--variant", args.variant, "--epochs", "1", "--seed", "1", "--set", "train.progress=false"]
        commands = {"import torch (floor)": ([sys.executable, "-c", "import torch"], env, ROOT)}
        checkouts = {"": ROOT} | ({"baseline: ": args.baseline.resolve()} if args.baseline else {})
        for label, checkout in checkouts.items():
            commands |= {  # each checkout its own store: an older one may not read a newer store's schema
                f"{label}tasks.train, tracking off": (train, {**env, "MRDIB_TRACKING": "off"}, checkout),
                f"{label}tasks.train, tracking on": (
                    train, {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow-{bool(label)}.db"}, checkout)}
        times: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
        for round_ in range(args.rounds + 1):  # round 0 warms the OS cache and creates the MLflow store
            order = list(enumerate(commands.items()))
            for index, (name, (command, command_env, cwd)) in order if round_ % 2 else order[::-1]:
                # a fresh output folder each time: an existing last.pt would be resumed, skipping the epoch
                extra = ["--out", str(folder / f"out-{index}-{round_}")] if "tasks.train" in command else []
                result = run(command + extra, command_env, cwd)
                if round_:
                    times[name].append(result)
            print(f"round {round_}/{args.rounds} done", file=sys.stderr, flush=True)
    floor = statistics.median(r["exit"] for r in times["import torch (floor)"])
    print(f"\nmedian seconds from spawn ({args.rounds} rounds, {args.backbone}/{args.variant}, synthetic data); "
          f"in brackets: x the floor, `import torch` = {floor:.2f} s\n")
    print("| command | model built | first epoch done | exit |")
    print("|---|---|---|---|")
    for name, rounds in times.items():
        cells = []
        for mark in ("built", "first epoch", "exit"):
            values = [r[mark] for r in rounds if mark in r]
            cells.append(f"{statistics.median(values):.2f} ({statistics.median(values) / floor:.1f}x)"
                         if values else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    run_command(main)
