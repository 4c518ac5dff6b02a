"""The CLI: dispatch, help, overrides, and clear errors without tracebacks."""

import subprocess
import sys

import pytest

from l2i import cli
from l2i import config as C
from l2i.errors import ConfigError


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
