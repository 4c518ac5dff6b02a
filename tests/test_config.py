"""l2i.config: YAML recipes -> typed dataclasses, base inheritance, overrides, errors."""

from __future__ import annotations

import dataclasses
import re
import types
from typing import Literal, Union, get_args, get_origin, get_type_hints

import pytest
import yaml

from l2i import cli
from l2i.config import (
    ClassifierRecipe,
    DataConfig,
    EvaluateRecipe,
    FeaturesConfig,
    InterpretRecipe,
    L2IRecipe,
    PsiConfig,
    SynthRecipe,
    ThetaConfig,
    TrainerConfig,
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


# --------------------------------------------------------------------------- values (issue 11.3)
@pytest.mark.parametrize("cls,key,value,msg", [
    (InterpretRecipe, "top_k", "abc", r"config key 'top_k': expected an integer or null, "
                                      r"got 'abc'"),
    (InterpretRecipe, "relevance_th", "abc", r"'relevance_th': expected a number or null, "
                                             r"got 'abc'"),
    (ClassifierRecipe, "data.duration_s", "five", r"'data\.duration_s': expected a number or "
                                                  r"null, got 'five'"),
    (EvaluateRecipe, "test_folds", "1,x", r"'test_folds\[1\]': expected an integer, got 'x'"),
    (EvaluateRecipe, "test_folds", "{a: 1}", r"'test_folds': expected a list of integers"),
    (ClassifierRecipe, "data.train_folds", "1,x", r"'data\.train_folds\[1\]'.*integer.*'x'"),
    (SynthRecipe, "snr_db", "0,loud", r"'snr_db\[1\]': expected a number, got 'loud'"),
])
def test_optional_union_and_list_values_name_key_value_and_type(cls, key, value, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(cls, None, {key: value})


def test_optional_values_convert():
    cfg = load_config(InterpretRecipe, None, ["--top_k", "3", "--relevance_th", "0.25",
                                              "--target", "null"])
    assert (cfg.top_k, cfg.relevance_th, cfg.target) == (3, 0.25, None)
    cfg = load_config(EvaluateRecipe, None, ["--test_folds", "4,5", "--top_k", "none"])
    assert cfg.test_folds == [4, 5] and cfg.top_k is None
    assert load_config(EvaluateRecipe, None, ["--test_folds", "[4, 5]"]).test_folds == [4, 5]
    assert load_config(EvaluateRecipe, None, ["--test_folds", "4"]).test_folds == [4]


def test_command_line_text_stays_text_for_string_fields():
    """A string field keeps what was typed: no YAML octal/float/bool reading of '0123' etc."""
    cfg = load_config(InterpretRecipe, None, ["--ckpt", "0123", "--target", "007",
                                              "--output_folder", "1e3", "--files", "yes"])
    assert (cfg.ckpt, cfg.target, cfg.output_folder, cfg.files) == ("0123", "007", "1e3",
                                                                   ["yes"])
    assert load_config(ClassifierRecipe, None, ["--data_folder", "true"]).data_folder == "true"
    assert load_config(ClassifierRecipe, None, ["--trainer.epochs", "010"]).trainer.epochs == 10


def _leaves(cls, prefix=""):
    """Every (dotted key, type) leaf of a recipe dataclass."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _leaves(tp, prefix + f.name + ".")
        else:
            yield prefix + f.name, tp


def _accepts_text(tp):
    """Types that any command-line text fits (a plain string field)."""
    return tp is str or (get_origin(tp) in (Union, types.UnionType) and str in get_args(tp)) or (
        get_origin(tp) is list and get_args(tp)[0] is str)


RECIPES = sorted({c.recipe for c in cli.COMMANDS.values()}, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", RECIPES, ids=lambda c: c.__name__)
def test_fuzz_every_field_with_a_wrong_typed_value(cls, tmp_path):
    """Every field of every recipe: a wrong-typed value is a ConfigError naming the key."""
    checked = 0
    for key, tp in _leaves(cls):
        if get_origin(tp) is dict:  # a mapping field (classifier.kwargs) takes any mapping
            continue
        bad_yaml = {"a": [1, 2]}  # a mapping fits no other leaf field
        node = raw = {}
        *sections, leaf = key.split(".")
        for s in sections:
            node = node.setdefault(s, {})
        node[leaf] = bad_yaml
        with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
            load_config(cls, _yaml(tmp_path / "r.yaml", raw))
        checked += 1
        if _accepts_text(tp):
            continue
        for text in ("abc", "1,x", "{a: 1}"):  # a list field names the bad item: 'key[1]'
            with pytest.raises(ConfigError, match=re.escape(f"'{key}") + r"(\[\d+\])?'"):
                load_config(cls, None, [f"--{key}", text])
    assert checked == sum(get_origin(t) is not dict for _, t in _leaves(cls)) >= 3


def test_wrong_typed_sections_and_base_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"'trainer': expected a mapping"):
        load_config(ClassifierRecipe, _yaml(tmp_path / "a.yaml", {"trainer": 3}),
                    ["--trainer.lr", "1"])
    with pytest.raises(ConfigError, match=r"'trainer': expected a mapping.*--trainer\.KEY VALUE"):
        load_config(ClassifierRecipe, None, ["--trainer", "3"])
    bad_item = _yaml(tmp_path / "l.yaml", {"data": {"train_folds": [1, "x"]}})
    with pytest.raises(ConfigError, match=r"'data\.train_folds\[1\]': expected an integer"):
        load_config(ClassifierRecipe, bad_item)
    with pytest.raises(ConfigError, match=r"base.*expected the path"):
        load_config(ClassifierRecipe, _yaml(tmp_path / "b.yaml", {"base": 3}))
    # `trainer: null` in YAML is the defaults, and overrides still apply on top
    cfg = load_config(ClassifierRecipe, _yaml(tmp_path / "c.yaml", {"trainer": None}),
                      ["--trainer.lr", "0.5"])
    assert cfg.trainer.lr == 0.5 and cfg.trainer.epochs == TrainerConfig().epochs


# --------------------------------------------------------------------------- choices (issue 11.4)
def _choice_fields():
    for cls in RECIPES:
        for key, tp in _leaves(cls):
            if get_origin(tp) is Literal:
                yield cls, key, get_args(tp)


def test_choice_fields_are_literals_checked_in_the_parser():
    fields = {key for _, key, _ in _choice_fields()}
    for key in ("features.window", "data.format", "data.crop", "data.normalize",
                "trainer.optimizer", "trainer.scheduler", "model.arch", "model.input",
                "nmf.solver", "psi.activation", "psi.time_resolution", "psi.freq_reduce",
                "theta.pooling", "contamination"):
        assert key in fields, key
    for cls, key, choices in _choice_fields():
        for choice in choices:
            got = load_config(cls, None, {key: choice})
            assert _get(got, key) == choice
        # case does not matter on the command line; the stored value is the canonical one
        assert _get(load_config(cls, None, {key: choices[0].upper()}), key) == choices[0]
        listed = ", ".join(repr(c) for c in choices)
        with pytest.raises(ConfigError, match=re.escape(f"config key '{key}': expected one of "
                                                        f"{listed}, got 'bogus'")):
            load_config(cls, None, {key: "bogus"})


def _get(cfg, dotted):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("build,key", [
    (lambda: ThetaConfig(pooling="median"), "theta.pooling"),
    (lambda: PsiConfig(freq_reduce="sum"), "psi.freq_reduce"),
    (lambda: TrainerConfig(optimizer="lion"), "trainer.optimizer"),
    (lambda: FeaturesConfig(window="kaiser"), "features.window"),
    (lambda: dataclasses.replace(DataConfig(), crop="middle"), "data.crop"),
    (lambda: EvaluateRecipe(contamination="babble"), "contamination"),
])
def test_choices_are_checked_when_a_config_is_built_in_python(build, key):
    with pytest.raises(ConfigError, match=re.escape(f"config key '{key}': expected one of")):
        build()


def test_module_choice_constants_match_the_literals():
    """Modules that list the allowed values themselves list exactly the Literal's values."""
    from l2i import audio, data, evaluation, nmf
    from l2i import models as M

    hints = {k: get_args(t) for cls in RECIPES for k, t in _leaves(cls)
             if get_origin(t) is Literal}
    assert tuple(M.ARCHS) == hints["model.arch"]
    assert tuple(data.FORMATS) == hints["data.format"]
    assert tuple(audio.CROPS) == hints["data.crop"]
    assert tuple(audio.NORMALIZATIONS) == hints["data.normalize"]
    assert tuple(nmf.SOLVERS) == hints["nmf.solver"]
    assert tuple(evaluation.CONTAMINATIONS) == hints["contamination"]
    from l2i.training import dispatch
    assert tuple(dispatch.METHODS) == hints["method"]


# --------------------------------------------------------------------------- unknown keys (11.4)
@pytest.mark.parametrize("cls,argv,suggestion", [
    (ClassifierRecipe, ["--train_folds", "1,2,3"], "did you mean data.train_folds?"),
    (ClassifierRecipe, ["--trainer.train_folds", "1"], "did you mean data.train_folds?"),
    (ClassifierRecipe, ["--lr", "1e-3"], "did you mean trainer.lr?"),
    (L2IRecipe, ["--pooling", "mean"], "did you mean theta.pooling?"),
    (L2IRecipe, ["--relevance_thr", "0.3"], "did you mean loss.relevance_th?"),
    (EvaluateRecipe, ["--train_folds", "1"], "did you mean data.train_folds?"),
])
def test_unknown_keys_suggest_the_dotted_key(cls, argv, suggestion):
    with pytest.raises(ConfigError) as err:
        load_config(cls, None, argv)
    assert str(err.value).endswith(suggestion)


def test_unknown_key_messages_never_list_nothing(tmp_path):
    for cls in RECIPES:
        keys = ["zzqx", "zzqx.y"] + [s + ".zzqx" for s in _sections(cls)] + [
            s + ".zzqx.y" for s in _sections(cls)]
        for key in keys:
            for how in ("cli", "yaml"):
                with pytest.raises(ConfigError) as err:
                    if how == "cli":
                        load_config(cls, None, {key: "1"})
                    else:
                        raw = node = {}
                        *sections, leaf = key.split(".")
                        for s in sections:
                            node = node.setdefault(s, {})
                        node[leaf] = 1
                        load_config(cls, _yaml(tmp_path / "r.yaml", raw))
                msg = str(err.value)
                assert "unknown config key" in msg, msg
                m = re.search(r"valid keys here: ?(.*)$", msg)
                assert m is None or m.group(1).strip(), msg
    # a value key used as a section says so
    with pytest.raises(ConfigError, match=r"'n_per_class' takes a value.*--n_per_class VALUE"):
        load_config(SynthRecipe, None, {"n_per_class.x": "1"})


def _sections(cls):
    hints = get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])]


def test_every_bad_key_and_value_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(ClassifierRecipe, None, ["--trainer.lr", "fast", "--data.crop", "middle",
                                             "--trainer.zzqx", "1", "--data_folder", "D",
                                             "--trainr.lr", "1"])
    msg = str(err.value)
    assert msg.startswith("4 bad config values: ")
    for part in ("'trainer.lr': expected a number, got 'fast'", "'data.crop': expected one of",
                 "unknown config key 'trainer.zzqx'", "unknown config key 'trainr'"):
        assert part in msg
