"""The tools a user runs by hand: compare runs, read the registry, drive the pipeline from Airflow."""
