"""One source of defaults: every CLI option that stands for a config field takes that field's
default (and, unless it says more, its help text); every RunConfig field is a `vrp run` option."""

from __future__ import annotations

import click
import pytest
import typer

from vrp.analysis.config import AnalyzeConfig, ProbeConfig
from vrp.cli import app
from vrp.config import RunConfig, TraceConfig, field_default, field_help
from vrp.interventions.config import InterveneConfig
from vrp.monitor.config import ExportConfig
from vrp.report.config import ReportConfig
from vrp.serve.config import ServeConfig
from vrp.toys.config import TrainConfig
from vrp.world.scene import WorldConfig

# command -> (config class, {option name: field name} where they differ); options without a
# field of that class are CLI-only (--force, --answer-only, --run, ...)
COMMANDS = {
    ("run",): (RunConfig, {"residuals": "store_residuals"}),
    ("intervene",): (InterveneConfig, {"sites": "patch_sites", "positions": "patch_positions"}),
    ("probe",): (ProbeConfig, {}),
    ("analyze",): (AnalyzeConfig, {}),
    ("report",): (ReportConfig, {"cases": "n_cases"}),
    # --image-size overrides the --world preset's only when given (tested below)
    ("world", "generate"): (WorldConfig, {"image_size": "(the world's)"}),
    # --steps defaults to each family's recipe (vrp.toys.recipes), not to TrainConfig.steps
    ("world", "train"): (TrainConfig, {"steps": "(the recipe's)"}),
    ("monitor", "export"): (ExportConfig, {}),
    ("serve",): (ServeConfig, {}),
}


def _command(path: tuple[str, ...]) -> click.Command:
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def _shown(value):
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_options_take_the_config_defaults(path):
    cls, renamed = COMMANDS[path]
    fields = set(field_help(cls)) | set(cls.__dataclass_fields__)
    checked = 0
    for p in _command(path).params:
        if p.param_type_name != "option":
            continue
        field = renamed.get(p.name, p.name)
        if field not in fields or p.required:  # a required option has no default to agree with
            continue
        assert p.default == _shown(field_default(cls, field)), f"{' '.join(path)} --{p.name}"
        checked += 1
    assert checked >= 1 or path == ("world", "generate")


def test_world_generate_takes_the_presets_defaults():
    from vrp.world.scene import PRESETS

    params = {p.name: p for p in _command(("world", "generate")).params}
    assert params["world"].default == "default" and PRESETS["default"] == WorldConfig()
    assert params["image_size"].default is None and field_help(WorldConfig)["image_size"] in params["image_size"].help


def test_run_exposes_every_run_option_with_its_documented_help():
    params = {p.name: p for p in _command(("run",)).params}
    helps = field_help(RunConfig)
    for field in RunConfig.__dataclass_fields__:
        name = {"store_residuals": "residuals"}.get(field, field)
        assert name in params, f"RunConfig.{field} has no `vrp run` option"
        assert params[name].help == helps[field]


def test_run_and_trace_share_their_defaults():
    shared = set(TraceConfig.__dataclass_fields__) & set(RunConfig.__dataclass_fields__)
    assert shared >= {"seed", "samples", "temperature", "top_p", "rho", "rho_rule", "max_new_tokens", "batch_size"}
    assert set(RunConfig.TRACE_FIELDS) == shared  # every shared option is handed to the tracer
    for name in shared:
        assert field_default(RunConfig, name) == field_default(TraceConfig, name)
    assert RunConfig().trace_config() == TraceConfig()


def test_every_documented_field_has_help_and_every_field_is_documented():
    for cls in (RunConfig, TraceConfig, ProbeConfig, AnalyzeConfig, InterveneConfig, ReportConfig, ExportConfig,
                TrainConfig, WorldConfig, ServeConfig):  # fmt: skip
        assert set(field_help(cls)) == set(cls.__dataclass_fields__), cls.__name__
