"""The study spec: TOML, overrides, validation, run names."""

from __future__ import annotations

from pathlib import Path

import pytest

from vrp.config import TOY_MODELS, ConfigError, RunConfig
from vrp.study.config import StudyConfig, run_name


def test_defaults_are_the_three_toys_on_shapesworld():
    cfg = StudyConfig()
    assert cfg.models == TOY_MODELS and cfg.datasets == ("shapesworld",)
    assert cfg.pairs() == [(m, "shapesworld") for m in TOY_MODELS]
    assert cfg.samples == RunConfig.samples and cfg.store_layers == RunConfig.store_layers


def test_toml_spec_and_overrides(tmp_path):
    spec = tmp_path / "study.toml"
    spec.write_text('models = ["toy-llava", "/m/qwen"]\ndatasets = ["shapesworld:10", "pope:/p.json@/img"]\n'
                    "samples = 4\nintervene = [\"patches\"]\n")  # fmt: skip
    cfg = StudyConfig.from_toml(spec, samples=2, seed=None)
    assert cfg.models == ("toy-llava", "/m/qwen") and cfg.samples == 2 and cfg.seed == 0
    assert cfg.intervene == ("patches",) and len(cfg.pairs()) == 4
    r = cfg.run_config("/m/qwen", "pope:/p.json@/img", tmp_path)
    assert isinstance(r, RunConfig) and r.samples == 2 and r.engine == "local"
    assert Path(r.out).parent == tmp_path / "runs" and Path(r.out).name.startswith("qwen__pope")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("models = [", "cannot read the study spec"),
        ("modles = ['toy-llava']", "modles"),
        ("samples = 'ten'", "samples"),
        ("intervene = ['everything']", "intervene kinds must be among"),
        ("models = ['toy-llava', 'toy-llava']", "distinct"),
        ("engine = 'dask'", "engine must be"),
        ("store_layers = 'some'", "store_layers"),
    ],
)
def test_bad_specs_are_errors_naming_the_key(tmp_path, text, match):
    spec = tmp_path / "s.toml"
    spec.write_text(text + "\n")
    with pytest.raises(ConfigError, match=match):
        StudyConfig.from_toml(spec)


def test_missing_spec_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the study spec"):
        StudyConfig.from_toml(tmp_path / "nope.toml")


def test_run_names_are_readable_and_unique():
    names = {run_name(m, d) for m in ("toy-llava", "/a/b/llava", "/c/b/llava") for d in ("shapesworld", "pope:/x@/y")}
    assert len(names) == 6
    assert run_name("toy-llava", "shapesworld:24").startswith("toy-llava__shapesworld-24__")
    assert all("/" not in n and ":" not in n for n in names)
