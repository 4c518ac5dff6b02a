"""The CLI: dispatch, help, overrides, and clear errors without tracebacks."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from l2i import cli
from l2i import config as C
from l2i.errors import ConfigError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "l2i.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_command_help_lists_nested_keys_with_defaults(capsys):
    assert cli.main(["train-classifier", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--trainer.lr (float) = 0.001" in out
    assert "--features.sample_rate (int) = 16000" in out
    # the map cache's keys are the interpreter's: not listed for the classifier
    assert "cache_auto_gb" not in out and "cache_shard_clips" not in out
    assert cli.main(["train", "--help"]) == 0
    assert "--trainer.cache_auto_gb (float) = 10.0" in capsys.readouterr().out


def test_unknown_command_suggests_closest(capsys):
    assert cli.main(["trian"]) == 2
    assert "did you mean train" in capsys.readouterr().err


def test_positionals_fill_fields_and_varargs():
    cmd = cli.COMMANDS["interpret"]
    cfg = cli.parse_command(cmd, ["m.ckpt", "a.wav", "b.flac", "--relevance_th", "0.3"])
    assert cfg.ckpt == "m.ckpt"
    assert cfg.files == ["a.wav", "b.flac"]
    assert cfg.relevance_th == 0.3


def test_recipe_plus_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("trainer:\n  epochs: 7\n  lr: 0.01\nfeatures:\n  sample_rate: 8000\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\ntrainer:\n  lr: 0.5\n")
    cfg = cli.parse_command(cli.COMMANDS["train-classifier"],
                            [str(child), "--trainer.epochs", "3", "--data_folder", "D"])
    assert (cfg.trainer.epochs, cfg.trainer.lr, cfg.features.sample_rate) == (3, 0.5, 8000)
    assert cfg.data_folder == "D"


def test_training_command_without_recipe_is_a_config_error():
    with pytest.raises(ConfigError, match="needs a recipe"):
        cli.parse_command(cli.COMMANDS["train"], ["--data_folder", "x"])


def test_bad_key_exits_2_with_message_and_no_traceback(tmp_path):
    res = run_cli("synth", str(tmp_path / "s"), "--n_per_clas", "3")
    assert res.returncode == 2
    assert "unknown config key 'n_per_clas'" in res.stderr
    assert "did you mean n_per_class" in res.stderr
    assert "Traceback" not in res.stderr


def test_bad_value_type_exits_2(tmp_path):
    res = run_cli("synth", str(tmp_path / "s"), "--n_per_class", "many")
    assert res.returncode == 2
    assert "n_per_class" in res.stderr and "integer" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_recipe_file_exits_2(tmp_path):
    res = run_cli("train-nmf", str(tmp_path / "nope.yaml"))
    assert res.returncode == 2
    assert "nope.yaml" in res.stderr and "not found" in res.stderr


def test_every_command_target_resolves_to_a_callable():
    import importlib

    for cmd in cli.COMMANDS.values():
        module, func = cmd.target.split(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:  # pragma: no cover - reported as a failure
            pytest.fail(f"{cmd.name}: {err}")
        assert callable(getattr(mod, func)), cmd.name


def test_every_shipped_recipe_loads():
    from pathlib import Path

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    kinds = {"classifier": C.ClassifierRecipe, "nmf": C.NMFRecipe, "l2i": C.L2IRecipe}
    found = 0
    for path in sorted(recipes.rglob("*.yaml")):
        kind = next((k for k in kinds if path.stem.startswith(k)), None)
        if kind is None:
            continue
        C.load_config(kinds[kind], path)
        found += 1
    assert found >= 6


def test_resume_device_and_noise_folder_short_forms(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("{}\n")
    cfg = cli.parse_command(cli.COMMANDS["train-classifier"], [
        str(recipe), "--resume", "--device", "cpu", "--noise_folder", "N"])
    assert cfg.trainer.resume is True and cfg.trainer.device == "cpu"
    assert cfg.augment.noise_folder == "N"
    # evaluate has a top-level noise_folder and device: the alias must not hijack them
    ev = cli.parse_command(cli.COMMANDS["evaluate"], ["m.ckpt", "--noise_folder", "P",
                                                      "--device", "cpu"])
    assert ev.noise_folder == "P" and ev.device == "cpu"


def test_threads_is_a_global_option_of_every_command(tmp_path, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        assert cli.main(["synth", str(tmp_path / "s"), "--n_per_class", "1", "--n_classes", "2",
                     "--duration_s", "0.5", "--sample_rate", "8000", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        for bad in ("abc", "0", "-2"):
            assert cli.main(["synth", str(tmp_path / "t"), "--threads", bad]) == 2
            err = capsys.readouterr().err
            assert "--threads must be a whole number" in err and repr(bad) in err
            assert "Traceback" not in err
    finally:
        torch.set_num_threads(before)
    cli.main(["--help"])
    assert "--threads N" in capsys.readouterr().out


@pytest.mark.parametrize("argv,key,value,expected", [
    (["interpret", "m.ckpt", "a.wav", "--top_k", "abc"], "top_k", "abc", "an integer or null"),
    (["interpret", "m.ckpt", "--relevance_th", "abc"], "relevance_th", "abc", "a number or null"),
    (["evaluate", "m.ckpt", "--data.duration_s", "five"], "data.duration_s", "five",
     "a number or null"),
    (["evaluate", "m.ckpt", "--data.train_folds", "1,x"], "data.train_folds[1]", "x",
     "an integer"),
    (["evaluate", "m.ckpt", "--contamination", "babble"], "contamination", "babble",
     "one of 'none', 'white_noise', 'mixtures', 'noise_folder'"),
])
def test_bad_values_exit_2_naming_key_value_and_type(capsys, argv, key, value, expected):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"config key '{key}': expected {expected}, got '{value}'" in err, err


def test_bad_optional_value_has_no_traceback():
    res = run_cli("interpret", "m.ckpt", "a.wav", "--top_k", "abc")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "'top_k': expected an integer or null, got 'abc'" in res.stderr


def test_fuzz_every_command_and_field_exits_2_without_running(monkeypatch, capsys):
    """Every field of every command, given a wrong-typed value on the command line, exits 2."""
    from test_config import _accepts_text, _leaves

    for name, cmd in list(cli.COMMANDS.items()):
        # if the parser ever accepted the value, the stand-in target returns and main gives 0
        monkeypatch.setitem(cli.COMMANDS, name, dataclasses.replace(cmd, target="builtins:id"))
        recipe = [str(RECIPES / "demo" / "classifier.yaml")] if cmd.takes_recipe else []
        for key, tp in _leaves(cmd.recipe):
            if _accepts_text(tp):
                continue
            assert cli.main([name, *recipe, f"--{key}", "abc"]) == 2, (name, key)
            assert f"'{key}" in capsys.readouterr().err


def test_unknown_key_suggests_the_dotted_key(capsys):
    assert cli.main(["train-classifier", str(RECIPES / "demo" / "classifier.yaml"),
                     "--train_folds", "1,2,3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'train_folds': did you mean data.train_folds?" in err


def test_help_with_a_recipe_shows_its_values_and_choices(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("trainer:\n  epochs: 7\n  optimizer: sgd\n")
    assert cli.main(["train-classifier", str(recipe), "--trainer.lr", "0.5", "--help"]) == 0
    out = capsys.readouterr().out
    assert f"keys (values from {recipe} and the options given):" in out
    assert "--trainer.epochs (int) = 7" in out and "--trainer.lr (float) = 0.5" in out
    assert "--trainer.optimizer (adam|adamw|sgd) = 'sgd'" in out
    assert "--data.duration_s (float | None) = 5.0" in out
    # without a recipe: the defaults; a recipe that does not load is said, defaults shown
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "keys (default):" in out and "--theta.pooling (attention|mean|max) = 'attention'" in out
    assert cli.main(["train", str(tmp_path / "nope.yaml"), "--help"]) == 0
    out = capsys.readouterr().out
    assert "nope.yaml not found" in out and "keys (default):" in out
