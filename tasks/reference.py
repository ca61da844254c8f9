"""Stage `reference@<dataset>-<backbone>`: an ID-only reference (Pop, BPR-MF, LightGCN), base only, for
every seed of `pipeline.seeds`; its MLflow runs are tagged stage=reference.

    python -m tasks.reference --data-dir data/prepared/synthetic --backbone lightgcn --out DIR
"""
from pipeline.errors import run_command
from pipeline.training import command


def main(argv: list[str] | None = None) -> None:
    command(argv, stage="reference")


if __name__ == "__main__":
    run_command(main)
