"""Reliability probes: scikit-learn-style estimators over stored activations (no model imports)."""
