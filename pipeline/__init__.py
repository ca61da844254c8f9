"""The pipeline's shared code: runs, I/O, tracking, training, tuning, statistics, the data generators.

Stages (tasks/) and tools (tools/) import it; it imports config/ and models/, never a stage."""
