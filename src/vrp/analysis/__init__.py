"""Analyses of stored runs: probes and the predictor table (no model imports)."""
