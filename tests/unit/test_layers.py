"""The layers of the package, one way up (docs/architecture.md): a module imports only its own
layer or lower ones, deferred imports inside functions included."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "vrp"

# bottom to top; a package (or top-level module) of vrp -> its layer
LAYERS: list[set[str]] = [
    {"_lazy", "_version", "config", "fileio"},
    {"data", "world"},
    {"models"},
    {"capture"},
    {"signals", "probes", "stats"},
    {"tracing"},
    {"runs"},
    {"analysis", "interventions", "monitor", "toys", "study"},
    {"report", "serve"},
    {"cli", "__init__"},
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
# lower layers that must not be imported even though they sit below (they work on arrays and runs)
NO_MODEL = {"signals", "stats", "probes", "report"}


def _unit(module: str) -> str:
    """``vrp.capture.engine`` -> ``capture``; ``vrp`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every vrp module a file imports (module level and inside functions, and the modules a
    package names in its lazy ``_EXPORTS``), with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = "vrp." + ".".join(path.relative_to(SRC).with_suffix("").parts)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
            out += [(node.lineno, v.partition(":")[0]) for v in ast.literal_eval(node.value).values()]
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "vrp"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = here.split(".")[: -node.level]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "vrp":
                if mod == "vrp":  # from vrp import x: x may be a subpackage
                    out += [(node.lineno, f"vrp.{a.name}") for a in node.names]
                else:
                    out.append((node.lineno, mod))
    return out


def _files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_every_package_has_a_layer():
    units = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in _files()}
    assert units <= set(RANK), f"give these a layer in LAYERS and docs/architecture.md: {sorted(units - set(RANK))}"


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_a_higher_layer(path):
    me = path.relative_to(SRC).parts[0].removesuffix(".py")
    bad = []
    for line, mod in _imports(path):
        other = _unit(mod)
        if other not in RANK:
            continue  # e.g. `from vrp import __version__`-style names that are not packages
        if RANK[other] > RANK[me]:
            bad.append(f"line {line}: {mod} (layer {RANK[other]} '{other}' above '{me}', layer {RANK[me]})")
        if me in NO_MODEL and other in ("models", "capture", "tracing"):
            bad.append(f"line {line}: {mod} ({me} works on arrays and stored runs, never on a model)")
    assert not bad, f"{path.relative_to(SRC)} imports upward:\n" + "\n".join(bad)


def test_the_checker_sees_deferred_and_relative_imports(tmp_path, monkeypatch):
    """The walk finds imports inside functions and resolves relative ones (a test of the test)."""
    pkg = tmp_path / "vrp" / "signals"
    pkg.mkdir(parents=True)
    f = pkg / "x.py"
    f.write_text(
        "def f():\n    from vrp.runs import pipeline\n\nfrom ..capture import engine\nimport vrp.models.base\n"
        "_EXPORTS = {'x': 'vrp.report.build', 'y': 'vrp.tracing.tracer:trace'}\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "vrp")
    assert sorted(m for _, m in _imports(f)) == [
        "vrp.capture",
        "vrp.models.base",
        "vrp.report.build",
        "vrp.runs",
        "vrp.tracing.tracer",
    ]
