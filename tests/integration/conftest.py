"""Fixtures for integration tests: tiny random-weight models of the three families."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def random_toy_dirs(tmp_path_factory) -> dict[str, str]:
    """Random-init toy models of each family saved with save_pretrained (arch -> folder)."""
    from vrp.toys.build import ARCHS, build_toy

    out = {}
    for arch in ARCHS:
        d = tmp_path_factory.mktemp(f"rand_{arch}")
        model, processor = build_toy(arch, seed=1)
        model.save_pretrained(d)
        processor.save_pretrained(d)
        out[arch] = str(d)
    return out
