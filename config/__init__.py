"""The configuration: every section schema of params.yaml, the loader and the overrides (a leaf: no torch)."""
