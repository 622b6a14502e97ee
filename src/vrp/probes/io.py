"""Save and load probes as safetensors + JSON: no pickle, identical predictions after a round trip.

Every probe class implements ``get_state() -> (arrays, meta)`` (numpy arrays; a JSON-ready dict
whose ``"params"`` holds the ``__init__`` arguments) and the classmethod
``from_state(arrays, meta)``. A probe directory holds

    probe.safetensors   the arrays
    probe.json          {"format", "class", "module", "vrp_version", "meta"}

Loading dispatches on the class name through the explicit :data:`REGISTRY`, importing the
class's module only then; nothing in the files is ever executed. Both files are written
atomically (temporary name, then rename).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

from vrp.fileio import atomic_write_bytes

FORMAT = "vrp-probe-1"
REGISTRY: dict[str, str] = {  # class name -> module that defines it
    "LayerwiseLogistic": "vrp.probes.linear",
    "StackedLogistic": "vrp.probes.linear",
    "MLPProbe": "vrp.probes.mlp",
    "TreeEnsembleProbe": "vrp.probes.trees",
    "ConsistencyHead": "vrp.probes.consistency",
}


def save_probe(probe, directory: str | Path) -> Path:
    """Write a fitted probe to ``directory`` (created if missing); returns the directory.

    Raises:
        TypeError: the probe's class is not in :data:`REGISTRY`, an array is not a numpy
            array, or the metadata is not JSON-serializable.
    """
    from vrp._version import __version__

    name = type(probe).__name__
    if name not in REGISTRY:
        raise TypeError(f"cannot save a {name}: known probe classes are {sorted(REGISTRY)}")
    arrays, meta = probe.get_state()
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray) or value.dtype == object:
            raise TypeError(f"{name}.get_state() array {key!r} is {type(value).__name__}, not a numeric numpy array")
    doc = {"format": FORMAT, "class": name, "module": REGISTRY[name], "vrp_version": __version__, "meta": meta}
    text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n"  # before touching the disk
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(d / "probe.safetensors", save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))
    atomic_write_bytes(d / "probe.json", text.encode())
    return d


def load_probe(directory: str | Path):
    """Load a probe written by :func:`save_probe`.

    Raises:
        FileNotFoundError: the directory holds no probe.
        ValueError: unknown format or probe class.
    """
    d = Path(directory)
    try:
        doc = json.loads((d / "probe.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{d} holds no probe (no probe.json)") from None
    if doc.get("format") != FORMAT:
        raise ValueError(f"{d / 'probe.json'}: unknown format {doc.get('format')!r} (expected {FORMAT!r})")
    name = doc.get("class")
    if name not in REGISTRY:
        raise ValueError(f"{d / 'probe.json'}: unknown probe class {name!r}; known: {sorted(REGISTRY)}")
    cls = getattr(importlib.import_module(REGISTRY[name]), name)
    return cls.from_state(load_file(str(d / "probe.safetensors")), doc["meta"])
