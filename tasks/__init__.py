"""The DVC stages: `tasks/<stage>.py` is run by the stage of that name in dvc.yaml (`python -m tasks.<stage>`)."""
