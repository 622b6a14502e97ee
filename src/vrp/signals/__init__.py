"""Reliability signals: pure functions over captured arrays (no model imports here)."""
