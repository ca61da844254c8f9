"""Stage `train@<dataset>-<backbone>-<variant>`: one backbone, base or mrdib, trained and evaluated for
every seed of `pipeline.seeds` with the tune stage's values (pipeline/training.py says what it writes).

    python -m tasks.train --data-dir data/prepared/synthetic --backbone vbpr --variant mrdib --out DIR
"""
from pipeline.errors import run_command
from pipeline.training import command


def main(argv: list[str] | None = None) -> None:
    command(argv, stage="train")


if __name__ == "__main__":
    run_command(main)
