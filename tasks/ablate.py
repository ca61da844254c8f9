"""Stage `ablate@<dataset>-<backbone>-<ablation>`: the mrdib variant with some alphas at 0 (the paper's
Table 2; `config.sections.ABLATIONS`), with the mrdib variant's tuned values, for every seed of
`pipeline.seeds`. Its MLflow runs are tagged stage=ablate and never registered.

    python -m tasks.ablate --data-dir data/prepared/synthetic --backbone vbpr --variant mrdib \
        --ablation no_kl --out DIR
"""
from pipeline.errors import run_command
from pipeline.training import command


def main(argv: list[str] | None = None) -> None:
    command(argv, stage="ablate")


if __name__ == "__main__":
    run_command(main)
