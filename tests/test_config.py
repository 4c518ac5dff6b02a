"""l2i.config: YAML recipes -> typed dataclasses, base inheritance, overrides, errors."""

from __future__ import annotations

import pytest
import yaml

from l2i.config import (
    ClassifierRecipe,
    DataConfig,
    FeaturesConfig,
    SynthRecipe,
    from_dict,
    load_config,
    parse_overrides,
    save_config,
    to_dict,
)
from l2i.errors import ConfigError


def _yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_and_derived_sizes():
    f = FeaturesConfig()
    assert (f.win_length, f.hop_length, f.n_freq) == (372, 186, 513)  # reference at 16 kHz
    f8 = FeaturesConfig(sample_rate=8000, n_fft=256)
    assert (f8.win_length, f8.hop_length, f8.n_freq) == (186, 93, 129)
    cfg = load_config(ClassifierRecipe)
    assert cfg.data.train_folds == [1, 2, 3] and cfg.trainer.lr == 1e-3


def test_yaml_recipe_and_overrides(tmp_path):
    path = _yaml(tmp_path / "r.yaml", {"data_folder": "/d", "trainer": {"epochs": 3},
                                      "data": {"test_folds": [4]}})
    cfg = load_config(ClassifierRecipe, path, ["--trainer.lr", "1e-3", "--data.train_folds",
                                               "1,2", "--features.f_max", "none",
                                               "--trainer.resume", "--model.arch=cnn14"])
    assert cfg.data_folder == "/d" and cfg.trainer.epochs == 3
    assert cfg.trainer.lr == pytest.approx(1e-3) and isinstance(cfg.trainer.lr, float)
    assert cfg.data.train_folds == [1, 2] and cfg.data.test_folds == [4]
    assert cfg.features.f_max is None and cfg.trainer.resume is True
    assert cfg.model.arch == "cnn14"
    # mapping overrides work too, and values keep their types
    cfg = load_config(ClassifierRecipe, None, {"features.sample_rate": 8000,
                                               "data.duration_s": "null"})
    assert cfg.features.sample_rate == 8000 and cfg.data.duration_s is None


def test_base_inheritance_deep_merges(tmp_path):
    (tmp_path / "sub").mkdir()
    _yaml(tmp_path / "base.yaml", {"trainer": {"epochs": 50, "lr": 0.01},
                                   "features": {"n_mels": 64}})
    child = _yaml(tmp_path / "sub" / "child.yaml", {"base": "../base.yaml",
                                                    "trainer": {"epochs": 2}})
    cfg = load_config(ClassifierRecipe, child)
    assert cfg.trainer.epochs == 2 and cfg.trainer.lr == 0.01  # merged, not replaced
    assert cfg.features.n_mels == 64


def test_base_loop_and_missing(tmp_path):
    _yaml(tmp_path / "a.yaml", {"base": "b.yaml"})
    _yaml(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="loops back"):
        load_config(ClassifierRecipe, tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match=r"recipe .*nope\.yaml not found"):
        load_config(ClassifierRecipe, tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(ClassifierRecipe, tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(ClassifierRecipe, tmp_path / "list.yaml")


def test_unknown_keys_suggest_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer\.lrr': did you mean "
                                          r"trainer\.lr\?"):
        load_config(ClassifierRecipe, None, ["--trainer.lrr", "1"])
    with pytest.raises(ConfigError, match=r"unknown config key 'trainr': did you mean trainer\?"):
        load_config(ClassifierRecipe, None, ["--trainr.lr", "1"])
    with pytest.raises(ConfigError, match=r"'data_foldr'.*data_folder"):
        load_config(ClassifierRecipe, None, {"data_foldr": "x"})
    with pytest.raises(ConfigError, match=r"unknown config key 'zzz': valid keys here"):
        load_config(SynthRecipe, None, {"zzz": 1})


@pytest.mark.parametrize("key,value,msg", [
    ("trainer.epochs", "3.5", "expected an integer"),
    ("trainer.epochs", True, "expected an integer"),
    ("trainer.lr", "fast", "expected a number"),
    ("trainer.resume", "maybe", "expected true/false"),
    ("data.train_folds", "1,x", r"data\.train_folds\[1\].*integer"),
    ("data.esc10", [1], "expected true/false"),
])
def test_type_errors_name_the_key(key, value, msg):
    with pytest.raises(ConfigError, match=msg) as err:
        load_config(ClassifierRecipe, None, {key: value})
    assert key.split(".")[0] in str(err.value)


def test_parse_overrides():
    assert parse_overrides(["--a.b", "3", "--flag", "--c=x=y"]) == {"a.b": "3", "flag": "true",
                                                                   "c": "x=y"}
    assert parse_overrides(["--n", "-5"]) == {"n": "-5"}  # a negative number is a value
    with pytest.raises(ConfigError, match="unexpected argument 'oops'"):
        parse_overrides(["oops"])


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(ClassifierRecipe, None, {"trainer.lr": 0.5, "data.duration_s": None,
                                               "features.f_max": 4000})
    path = save_config(cfg, tmp_path / "out" / "config.yaml")
    assert path.is_file() and not list((tmp_path / "out").glob("*.tmp"))
    again = load_config(ClassifierRecipe, path)
    assert again == cfg
    assert from_dict(DataConfig, to_dict(DataConfig(esc10=True))) == DataConfig(esc10=True)


def test_nested_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict(ClassifierRecipe, {"trainer": 3})
