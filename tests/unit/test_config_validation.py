"""The shared validation of every config dataclass: declared types (against a hand-written
table of cases), dict round trips with JSON's lists, and the Attributes docstrings as help."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from vrp.analysis.config import AnalyzeConfig, ProbeConfig
from vrp.capture.engine import CaptureConfig
from vrp.config import Config, ConfigError, RunConfig, TraceConfig, field_help, validate_types
from vrp.interventions.config import InterveneConfig, InterveneConfigError
from vrp.monitor.config import ExportConfig
from vrp.report.config import ReportConfig
from vrp.toys.config import TrainConfig
from vrp.world.scene import WorldConfig


@dataclass(frozen=True)
class _Every(Config):
    """All the annotations configs use.

    Attributes:
        i: an int.
        f: a float: ints welcome,
            bools not.
        b: a bool.
        s: a str.
        o: an optional int.
        lit: a literal.
        t: a tuple of ints.
        pair: a fixed pair.
        m: a dict of str to float.
        xs: a list of str.
    """

    i: int = 1
    f: float = 1.0
    b: bool = False
    s: str = "x"
    o: int | None = None
    lit: Literal["a", "b"] = "a"
    t: tuple[int, ...] = (1, 2)
    pair: tuple[int, str] = (1, "a")
    m: dict[str, float] = field(default_factory=dict)
    xs: list[str] = field(default_factory=list)


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("i", [0, -3], [True, 1.0, "1", None]),
        ("f", [0.5, 2], [True, "0.5", None]),
        ("b", [True, False], [0, 1, "yes"]),
        ("s", ["", "y"], [1, None, b"x"]),
        ("o", [None, 3], [1.5, True]),
        ("lit", ["b"], ["c", 1]),
        ("t", [(), (3,), (1, 2, 3)], [[1, 2], (1, "2"), (True,)]),
        ("pair", [(2, "b")], [(2,), ("b", 2), (1, "a", 3)]),
        ("m", [{}, {"a": 1, "b": 2.5}], [{"a": "1"}, {1: 1.0}, [("a", 1.0)]]),
        ("xs", [[], ["a"]], [("a",), [1]]),
    ],
)
def test_validate_types_accepts_and_rejects(name, good, bad):
    for v in good:
        assert getattr(_Every(**{name: v}), name) == v
    for v in bad:
        with pytest.raises(ConfigError, match=rf"_Every\.{name} must be"):
            _Every(**{name: v})


def test_an_unknown_annotation_fails_loudly():
    @dataclass
    class Odd:
        x: set[int] = field(default_factory=set)

    with pytest.raises(TypeError, match="does not know the annotation"):
        validate_types(Odd())


def test_field_help_reads_the_attributes_section():
    h = field_help(_Every)
    assert set(h) == set(_Every.__dataclass_fields__)
    assert h["f"] == "a float: ints welcome, bools not."


ALL = [RunConfig, TraceConfig, ProbeConfig, AnalyzeConfig, ReportConfig, ExportConfig, TrainConfig, WorldConfig,
       CaptureConfig]  # fmt: skip


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_config_round_trips_through_json_and_rejects_unknown_keys(cls):
    cfg = cls()
    assert cls.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # lists back to tuples
    with pytest.raises(cls.error, match="unknown"):
        cls.from_dict({"no_such_option": 1})


def test_intervene_config_keeps_its_own_error_and_round_trips():
    cfg = InterveneConfig(kind="patching", layers=(0, -1), sizes=(0.5,), patch_sites=("mlp",))
    assert InterveneConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(InterveneConfigError, match=r"InterveneConfig\.k must be int"):
        InterveneConfig(kind="mlp", k=2.5)
    with pytest.raises(InterveneConfigError, match="kind must be one of"):
        InterveneConfig(kind="nope")


@pytest.mark.parametrize(
    ("cls", "kw", "match"),
    [
        (TraceConfig, {"layers": (0, "1")}, "TraceConfig.layers"),
        (TraceConfig, {"rho_rule": "area"}, "rho_rule"),
        (ProbeConfig, {"fractions": (0.5, 0.5, 0.5)}, "fractions"),
        (ProbeConfig, {"stacked_k": 0}, "stacked_k"),
        (AnalyzeConfig, {"level": 1.0}, "level"),
        (ReportConfig, {"n_cases": -1}, "n_cases"),
        (ExportConfig, {"target_risk": 0.1, "target_coverage": 0.8}, "not both"),
        (TrainConfig, {"task_weights": {"describe": "1"}}, "task_weights"),
        (TrainConfig, {"steps": 10, "schedule_steps": 5}, "schedule_steps"),
        (WorldConfig, {"background": (1, 2)}, "background"),
    ],
)
def test_each_config_checks_its_values(cls, kw, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kw)


def test_export_config_applies_the_default_rule():
    assert ExportConfig().rule == (0.1, None)
    assert ExportConfig(target_coverage=0.8).rule == (None, 0.8)
