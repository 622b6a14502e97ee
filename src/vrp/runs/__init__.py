"""Run directories and the pipeline."""
