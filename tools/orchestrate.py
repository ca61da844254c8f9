"""The project command behind the Airflow DAG (dags/mrdib_pipeline.py): a run's parameters in, DVC stages out.

    python -m tools.orchestrate configure --conf JSON [--run-id ID]
    python -m tools.orchestrate stage --conf JSON [--run-id ID] [--backbone NAME] PATTERN [PATTERN ...]

Both run in the DVC workspace (the current folder). `configure` validates the run's parameters
(the DAG's trigger form, as JSON) and writes them into params.yaml, comments and layout kept,
the way `dvc exp run -S key=value` leaves its values in the working copy: after the run,
params.yaml, dvc.lock and the outputs agree, and `git diff params.yaml` shows what the run
chose. `stage` writes the same values again (a no-op when they are there, so a task retried or
run on another worker sees the run's parameters) and runs `dvc repro --glob` on the patterns
that name stages of dvc.yaml; `{dataset}` and `{backbone}` in a pattern are filled from the run
(`train@{dataset}-{backbone}-*`). Patterns that name no stage exit with NOTHING_TO_DO, which the
DAG shows as a skipped task: `dvc repro --glob` given no match would reproduce everything.
Not `dvc exp run --temp -S`: that runs the whole pipeline in a throwaway copy in one process, so
its stages could not be separate tasks (retried, routed to GPU workers) sharing one workspace.

DVC's own cache makes a finished stage a no-op, so a retried task redoes only what is missing.
Two `dvc repro` in one workspace fail on DVC's lock: `stage` waits for a file lock
(.dvc/tmp/orchestrate.lock) first. The dvc process gets MRDIB_AIRFLOW_RUN_ID and
MRDIB_RUN_PARAMS (the run's parameters as JSON) in its environment, for the MLflow runs.
"""
from __future__ import annotations

import argparse
import fcntl
import fnmatch
import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from config.params import ParamsError, load_params
from pipeline.errors import run_command

NOTHING_TO_DO = 99  # exit code: no stage of dvc.yaml matches the patterns
REFUSED = 2         # exit code: the run's parameters cannot be applied (as argparse's usage errors)
LOCK = Path(".dvc/tmp/orchestrate.lock")
# Trigger-form parameter -> the params.yaml key it sets (`tune` and `n_trials`: see assignments).
PARAM_KEYS = {
    "datasets": "pipeline.datasets",
    "backbones": "pipeline.backbones",
    "variants": "pipeline.variants",
    "seeds": "pipeline.seeds",
    "device": "train.device",
}
# What the pipeline does while params.yaml lacks the key: asking for exactly that needs no key.
IMPLICIT = {"pipeline.variants": ["base", "mrdib"]}


class OrchestrateError(ValueError):
    """The run's parameters cannot be applied to this workspace."""


def assignments(conf: dict, params: dict) -> dict[str, object]:
    """params.yaml key -> value for the run's parameters `conf`; `params` is params.yaml as read.

    `tune` off sets tune.n_trials = 0 (the tune stage then keeps the mrdib: alphas); on, it sets
    tune.n_trials = `n_trials` and tunes every backbone of the run (tune.backbones).
    """
    wanted = {key: conf[name] for name, key in PARAM_KEYS.items() if name in conf}
    if conf.get("tune") is False:
        wanted["tune.n_trials"] = 0
    elif conf.get("tune"):
        wanted.update({f"tune.{name}": conf[name] for name in ("n_trials", "backbones") if name in conf})
    out = {}
    for key, value in wanted.items():
        if has_key(params, key):
            out[key] = value
        elif IMPLICIT.get(key, object()) != value:
            raise OrchestrateError(f"{key}={value!r}: params.yaml has no `{key}`, so this version of "
                                   "the pipeline cannot honour it")
    return out


def has_key(tree: dict, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def apply(path: Path, conf: dict, validate: bool) -> list[str]:
    """Write the run's parameters into params.yaml at `path`; returns 'key: old -> new' for each change."""
    from ruamel.yaml import YAML  # DVC's own YAML library: round-trips comments and flow lists

    yaml = YAML()
    yaml.width = 4096  # never re-wrap the long lines
    yaml.preserve_quotes = True
    # ruamel writes None as an empty value: keep `null` as written, so the diff holds only the run's keys
    yaml.representer.add_representer(type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = yaml.load(path.read_text())
    changes = []
    for key, value in assignments(conf, doc).items():
        *parents, last = key.split(".")
        node = doc
        for part in parents:
            node = node[part]
        if node[last] == value:
            continue
        changes.append(f"{key}: {json.dumps(node[last])} -> {json.dumps(value)}")
        if isinstance(node[last], list) and isinstance(value, list):
            node[last][:] = value  # in place: keeps the flow style and the comment
        else:
            node[last] = value
    if not changes:
        return changes
    staged = path.with_name(f".{path.name}.orchestrate")
    with staged.open("w") as handle:
        yaml.dump(doc, handle)
    if validate:
        try:
            load_params(staged)
        except ParamsError as err:
            staged.unlink()
            raise OrchestrateError(str(err).replace(str(staged), str(path))) from None
    os.replace(staged, path)
    return changes


def expand(patterns: list[str], conf: dict, backbone: str | None) -> list[str]:
    """Fill {dataset} (once per dataset of the run) and {backbone} in each pattern, in order, without repeats."""
    out = []
    for pattern in patterns:
        datasets = conf.get("datasets", []) if "{dataset}" in pattern else [None]
        for dataset in datasets:
            filled = pattern.format(dataset=dataset, backbone=backbone)
            if filled not in out:
                out.append(filled)
    return out


def dvc_command(*args: str) -> list[str]:
    """DVC of this interpreter."""
    return [sys.executable, "-m", "dvc", *args]


def dvc_env(env: dict | None = None) -> dict:
    """`env` (default: ours) with this interpreter's folder first on PATH, where stage commands find `python`."""
    env = dict(os.environ if env is None else env)
    return env | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}


def dvc(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(dvc_command(*args), env=dvc_env(kwargs.pop("env", None)), text=True, **kwargs)


@contextmanager
def workspace_lock():
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {LOCK}: another DVC task runs in this workspace", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def run_stages(patterns: list[str], conf: dict, run_id: str) -> int:
    """`dvc repro --glob` the patterns that name stages; the exit code (NOTHING_TO_DO: none does)."""
    listed = dvc("stage", "list", "--name-only", capture_output=True)
    if listed.returncode:
        print(f"dvc stage list failed: {listed.stderr.strip()}", file=sys.stderr, flush=True)
        return listed.returncode
    matched = [p for p in patterns if fnmatch.filter(listed.stdout.split(), p)]
    if not matched:
        print(f"no stage of dvc.yaml matches {patterns}: nothing to do", flush=True)
        return NOTHING_TO_DO
    unmatched = sorted(set(patterns) - set(matched))
    if unmatched:
        print(f"no stage matches {unmatched} (left out)", flush=True)
    env = os.environ | {"MRDIB_AIRFLOW_RUN_ID": run_id, "MRDIB_RUN_PARAMS": json.dumps(conf, sort_keys=True)}
    stages = [name for name in listed.stdout.split() if any(fnmatch.fnmatch(name, p) for p in matched)]
    print("+ dvc repro --glob " + " ".join(matched), flush=True)
    return repro_counting(matched, stages, env)


STAGE_LINE = re.compile(r"^(Running stage|Stage) '([^']+)'")


def repro_counting(patterns: list[str], stages: list[str], env: dict) -> int:
    """`dvc repro --glob patterns`, its output passed through, with a counter line before each of `stages`
    (the stages the patterns name) that DVC reaches, `[stage 3/8] train@synthetic-vbpr-base`, and an
    `[upstream]` line before a stage DVC checks on their behalf."""
    process = subprocess.Popen(dvc_command("repro", "--glob", *patterns), env=dvc_env(env), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    seen: set[str] = set()
    for line in process.stdout:
        found = STAGE_LINE.match(line)
        if found and found.group(2) not in seen:
            name = found.group(2)
            seen.add(name)
            reached = len(seen & set(stages))
            print(f"[stage {reached}/{len(stages)}] {name}" if name in stages else f"[upstream] {name}", flush=True)
        print(line, end="", flush=True)
    return process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["configure", "stage"])
    parser.add_argument("patterns", nargs="*", help="DVC stage names or shell-style patterns (stage only)")
    parser.add_argument("--conf", default="{}", help="the run's parameters as a JSON object")
    parser.add_argument("--run-id", default="manual", help="the Airflow run id, recorded in MLflow")
    parser.add_argument("--backbone", help="fills {backbone} in the patterns")
    args = parser.parse_intermixed_args(argv)
    try:
        conf = json.loads(args.conf)
    except json.JSONDecodeError as err:
        parser.error(f"--conf: expected a JSON object: {err}")
    if not isinstance(conf, dict):
        parser.error(f"--conf: expected a JSON object, got {args.conf!r}")
    if args.command == "stage" and not args.patterns:
        parser.error("stage needs at least one pattern")
    try:
        with workspace_lock():
            changes = apply(Path("params.yaml"), conf, validate=args.command == "configure")
            print("\n".join(changes) if changes else "params.yaml holds the run's parameters", flush=True)
            if args.command == "configure":
                return 0
            return run_stages(expand(args.patterns, conf, args.backbone), conf, args.run_id)
    except OrchestrateError as err:
        print(f"error: {err}", file=sys.stderr)
        return REFUSED


if __name__ == "__main__":
    run_command(main)
