"""``l2i <command>``: parse the command line, load the config, call one library function.

Every command is a config dataclass (see :mod:`l2i.config`). Positional arguments fill the
fields named in the table below; a recipe YAML may be given as the first positional argument
of the training commands (or ``--config FILE`` for the others); ``--key value`` overrides any
key, nested keys dotted (``--trainer.lr 1e-3``).
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import types
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from l2i import __version__
from l2i import config as C
from l2i.errors import L2IError


@dataclass(frozen=True)
class Command:
    name: str
    recipe: type
    target: str  # "module:function", called with the loaded config
    help: str
    positionals: tuple[str, ...] = ()  # config fields filled by positional arguments
    takes_recipe: bool = False  # first positional is a YAML recipe
    varargs: bool = False  # the last positional field takes every remaining positional


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("synth", C.SynthRecipe, "l2i.synthetic:synthesize_dataset",
            "make a procedural sound-event dataset (ESC-50 layout, ground-truth masks)",
            positionals=("output_folder",)),
    Command("prepare", C.PrepareRecipe, "l2i.prepare:prepare",
            "decode a dataset once into shards (streamed by training, flat memory)",
            positionals=("data_folder",)),
    Command("train-classifier", C.ClassifierRecipe, "l2i.training.classifier:train_classifier",
            "train the classifier to interpret (conv2d or cnn14)", takes_recipe=True),
    Command("evaluate-classifier", C.EvaluateClassifierRecipe,
            "l2i.training.classifier:evaluate_classifier",
            "accuracy and confusion matrix of a classifier checkpoint", positionals=("ckpt",)),
    Command("train-nmf", C.NMFRecipe, "l2i.training.nmf:train_nmf",
            "learn the NMF dictionary W (freq x K)", takes_recipe=True),
    Command("train", C.L2IRecipe, "l2i.training.dispatch:train",
            "train the L2I interpreter (psi + theta) on a frozen classifier, or an L-MAC "
            "decoder (method: lmac)", takes_recipe=True),
    Command("interpret", C.InterpretRecipe, "l2i.interpret:interpret_files",
            "explain audio files or folders (long ones in windows): wavs, figures, json, page",
            positionals=("ckpt", "files"), varargs=True),
    Command("evaluate", C.EvaluateRecipe, "l2i.evaluation:evaluate",
            "faithfulness metrics (AI AD AG FF Fid-In SPS COMP, fidelity) of every explainer "
            "on a test set", positionals=("ckpt", "extra_ckpts"), varargs=True),
    Command("report", C.ReportRecipe, "l2i.report:write_report",
            "a self-contained HTML report you can listen through", positionals=("run_folder",)),
    Command("run", C.L2IRecipe, "l2i.pipeline:run_pipeline",
            "every stage on a real dataset: classifier, NMF, L2I, evaluate, report",
            takes_recipe=True),
    Command("demo", C.DemoRecipe, "l2i.pipeline:demo",
            "the whole path on synthetic data in minutes"),
)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(f"l2i {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib
        close = difflib.get_close_matches(name, list(COMMANDS), n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        print(f"l2i: error: unknown command {name!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    cmd = COMMANDS[name]
    try:
        rest = set_threads(rest)
        if "-h" in rest or "--help" in rest:
            print(command_help(cmd, [a for a in rest if a not in ("-h", "--help")]))
            return 0
        cfg = parse_command(cmd, rest)
        module, func = cmd.target.split(":")
        result = getattr(importlib.import_module(module), func)(cfg)
    except L2IError as err:
        print(f"l2i {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # a training's message says how to resume
        print(f"l2i {name}: interrupted{f': {err}' if str(err) else ''}", file=sys.stderr)
        return 130
    if result is not None:
        try:
            print(result, flush=True)
        except BrokenPipeError:  # `l2i synth ... | head -1`
            sys.stderr.close()
    return 0


def parse_command(cmd: Command, argv: list[str]) -> Any:
    """Turn ``argv`` (after the command name) into the command's config dataclass."""
    positionals: list[str] = []
    i = 0
    while i < len(argv) and not argv[i].startswith("--"):
        positionals.append(argv[i])
        i += 1
    options = argv[i:]
    recipe_path = None
    if "--config" in options:
        j = options.index("--config")
        if j + 1 >= len(options):
            raise C.ConfigError("--config needs the path of a YAML file")
        recipe_path = options[j + 1]
        options = options[:j] + options[j + 2:]
    if cmd.takes_recipe:
        if not positionals:
            raise C.ConfigError(f"'l2i {cmd.name}' needs a recipe: l2i {cmd.name} "
                                "recipes/esc50/<recipe>.yaml [--key value ...]")
        recipe_path, positionals = positionals[0], positionals[1:]
    overrides = _apply_aliases(cmd.recipe, C.parse_overrides(options))
    fields = list(cmd.positionals)
    if len(positionals) > len(fields) and not cmd.varargs:
        raise C.ConfigError(f"too many arguments for 'l2i {cmd.name}': {positionals!r}")
    for k, field_name in enumerate(fields):
        if k >= len(positionals):
            break
        is_last = k == len(fields) - 1
        overrides[field_name] = (positionals[k:] if (cmd.varargs and is_last)
                                 else positionals[k])
    return C.load_config(cmd.recipe, recipe_path, overrides)


def set_threads(argv: list[str]) -> list[str]:
    """Apply and remove the global ``--threads N`` (``torch.set_num_threads``; default torch's).

    On a machine other jobs load, fewer threads than cores is often much faster (see
    docs/cli.md). Raises ConfigError for a value that is not a whole number >= 1.
    """
    out, value = [], None
    i = 0
    while i < len(argv):
        if argv[i] == "--threads" or argv[i].startswith("--threads="):
            if "=" in argv[i]:
                value = argv[i].split("=", 1)[1]
            elif i + 1 < len(argv):
                value, i = argv[i + 1], i + 1
            else:
                value = ""
        else:
            out.append(argv[i])
        i += 1
    if value is not None:
        if not value.strip().isdigit() or int(value) < 1:
            raise C.ConfigError(f"--threads must be a whole number >= 1 (torch CPU threads), "
                                f"got {value!r}")
        import torch
        torch.set_num_threads(int(value))
    return out


# Short forms for keys users type often: ``--resume`` is ``--trainer.resume``, etc. An alias
# applies only when the command has no top-level key of that name.
ALIASES = {"resume": "trainer.resume", "device": "trainer.device", "seed": "trainer.seed",
           "epochs": "trainer.epochs", "batch_size": "trainer.batch_size",
           "noise_folder": "augment.noise_folder", "precision": "trainer.precision"}


def _apply_aliases(recipe: type, overrides: dict[str, Any]) -> dict[str, Any]:
    top = {f.name for f in dataclasses.fields(recipe)}
    out = {}
    for key, value in overrides.items():
        target = ALIASES.get(key)
        if key not in top and target and target.split(".")[0] in top:
            key = target
        out[key] = value
    return out


def command_help(cmd: Command, argv: list[str] | None = None) -> str:
    """``l2i CMD --help``: every key with its type (choices listed) and value.

    With a recipe or options in ``argv`` the values are those they give (what the command would
    run with); without, the defaults. A recipe that does not load is said, defaults shown.
    """
    args = " ".join(f.upper() + ("..." if cmd.varargs and f == cmd.positionals[-1] else "")
                    for f in cmd.positionals)
    head = f"usage: l2i {cmd.name} {'RECIPE.yaml ' if cmd.takes_recipe else ''}{args} " \
           "[--key value ...]\n\n" + cmd.help + "\n\n"
    cfg, source = cmd.recipe(), "keys (default):"
    if argv:
        try:
            cfg = parse_command(cmd, argv)
            recipe = argv[0] if cmd.takes_recipe else _option(argv, "--config")
            source = (f"keys (values from {recipe} and the options given):" if recipe
                      else "keys (values with the options given):")
        except L2IError as err:
            head += f"note: showing the defaults, the arguments given do not load: {err}\n\n"
    top = {f.name for f in dataclasses.fields(cmd.recipe)}
    aliases = [f"--{a} = --{t}" for a, t in ALIASES.items()
               if a not in top and t.split(".")[0] in top]
    tail = ("\n\nshort forms: " + ", ".join(aliases)) if aliases else ""
    return head + source + "\n" + "\n".join(_describe(cfg, "", type(cfg).__name__)) + tail


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def _describe(obj: Any, prefix: str, recipe: str) -> list[str]:
    """``--key (type) = value`` lines of a config, less the keys whose field metadata says
    ``recipe`` (the command's recipe class name) does not use them (``unused_by``)."""
    lines = []
    hints = get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if recipe in f.metadata.get("unused_by", ()):
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            lines += _describe(value, prefix + f.name + ".", recipe)
        else:
            lines.append(f"  --{prefix}{f.name} ({_type_label(hints[f.name])}) = {value!r}")
    return lines


def _type_label(tp: Any) -> str:
    """``int``, ``float | None``, ``list[int]``; a choice field lists its values: ``a|b|c``."""
    origin = get_origin(tp)
    if origin is Literal:
        return "|".join(str(c) for c in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_label(a) for a in get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_label(a) for a in get_args(tp))}]"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    rows = "\n".join(f"  {n.ljust(width)}  {c.help}" for n, c in COMMANDS.items())
    return (f"l2i {__version__}: Listen to Interpret, listenable explanations of audio "
            f"classifiers\n\nusage: l2i <command> [args] [--key value ...]\n\ncommands:\n{rows}"
            "\n\n'l2i <command> --help' lists every key of a command with its default;\n"
            "'l2i <command> RECIPE.yaml --help' the values that recipe gives.\n"
            "Every command takes --threads N (torch CPU threads; default: torch's).")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
