"""A classifier given as code: any ``torch.nn.Module`` that takes waveforms, read with hooks.

:class:`HookedClassifier` wraps the user's model into the interface every l2i classifier has::

    forward(mag (B, T, F), phase=(B, T, F) or None, length=int or None)
        -> (logits (B, C), maps {layer: (B, C_i, T_i, F_i) or (B, C_i, T_i)})

It rebuilds the waveform from l2i's own STFT, ``istft(mag * exp(i phase), length)`` at
``features.sample_rate``, resamples it to the model's ``sample_rate`` when they differ
(``julius.ResampleFrac``: a windowed-sinc resampler in pure torch, differentiable, cached
kernels), runs the model with forward hooks on ``layers`` (``named_modules()`` names), takes the
logits from its output (``output``: the whole output, a tuple index or a dict key) and returns
each hooked output in the layout psi reads (:func:`l2i.models.psi.canonical_map`), with the time
axis found by :func:`probe_layers` (two clip lengths; the axis that grows with the input).

:func:`build_from_spec` imports the callable of a :class:`l2i.config.ClassifierSpec`
(``file.py:callable`` or ``dotted.module:callable``). **Importing a file runs its code**: give
only files you trust. The l2i checkpoint keeps the spec, the sha256 of the ``.py`` file and of
the model's state dict, and the hooked layers with their shapes (:func:`code_record`);
:func:`load_code_classifier` re-imports the module and refuses when a hash differs.

Imports only torch, julius and the typed configs.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from l2i import checkpoints as CK
from l2i.config import ClassifierSpec, FeaturesConfig, from_dict
from l2i.errors import ConfigError, L2IError
from l2i.models.psi import canonical_map, find_time_axis

CODE_FORMAT = CK.CLASSIFIER_CODE
CODE_VERSION = CK.CURRENT[CODE_FORMAT]
PROBE_SECONDS = (1.0, 2.0)  # two clip lengths: the time axis is the one that grows
PROB_EPS = 1e-7


# --------------------------------------------------------------------------- import
def _split_spec(module: str) -> tuple[str, str]:
    target, sep, name = module.rpartition(":")
    if not sep or not target or not name:
        raise ConfigError(f"classifier.module {module!r}: write 'path/to/file.py:callable' or "
                          "'dotted.module:callable' (the callable builds the nn.Module)")
    return target, name


def module_file(module: str) -> Path | None:
    """The ``.py`` file of a ``file.py:callable`` spec (resolved), None for a dotted module."""
    target, _ = _split_spec(module)
    return Path(target).resolve() if target.endswith(".py") else None


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def state_sha256(model: nn.Module) -> str:
    """Hex sha256 over the model's state dict: names, dtypes, shapes and bytes, sorted by name."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{t.numel()};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def import_callable(module: str) -> Callable[..., Any]:
    """The callable named by ``file.py:callable`` or ``dotted.module:callable``.

    A file is imported under a private name with its folder on ``sys.path`` (so it may import
    its neighbours). Raises ConfigError naming the spec when the file, module or name is missing.
    """
    target, name = _split_spec(module)
    path = module_file(module)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"classifier.module {module!r}: file {path} not found (paths are "
                              "relative to the current folder)")
        mod_name = f"_l2i_user_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(mod)
        except Exception as err:  # noqa: BLE001 - the user's code: report, do not crash
            raise L2IError(f"classifier.module {module!r}: importing {path} failed "
                           f"({type(err).__name__}: {err})") from err
        finally:
            sys.path.remove(str(path.parent))
    else:
        try:
            mod = importlib.import_module(target)
        except ImportError as err:
            raise ConfigError(f"classifier.module {module!r}: cannot import {target!r} ({err}); "
                              "give a file path ending in .py or an installed module") from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        names = [n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n))]
        close = difflib.get_close_matches(name, names, n=3)
        raise ConfigError(f"classifier.module {module!r}: {target} has no callable {name!r}"
                          + (f"; did you mean {', '.join(close)}?" if close else ""))
    return fn


def build_from_spec(spec: ClassifierSpec) -> tuple[nn.Module, list[str] | None]:
    """Import and call the spec's builder: ``(model in eval mode, class names or None)``."""
    # activation, scores (Literals) and kwargs (a mapping) are checked by l2i.config
    fn = import_callable(spec.module)
    args = (spec.checkpoint,) if spec.checkpoint else ()
    try:
        built = fn(*args, **dict(spec.kwargs))
    except Exception as err:  # noqa: BLE001 - the user's code: say which call failed
        call = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in spec.kwargs.items()])
        raise L2IError(f"classifier.module {spec.module!r}: the call {_split_spec(spec.module)[1]}"
                       f"({call}) failed ({type(err).__name__}: {err}); its arguments are "
                       "classifier.checkpoint (first) and classifier.kwargs") from err
    names = None
    if isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], nn.Module):
        built, names = built
        names = [str(n) for n in names]
    if not isinstance(built, nn.Module):
        raise L2IError(f"classifier.module {spec.module!r} returned {type(built).__name__}, "
                       "not a torch.nn.Module (or (module, class_names))")
    check_hookable(built, spec)
    return built.eval(), names


def check_hookable(model: nn.Module, spec: ClassifierSpec) -> None:
    """TorchScript and unknown layer names get a clear error (ConfigError)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise ConfigError(f"classifier.module {spec.module!r} returned a TorchScript module: "
                          "forward hooks are not supported on ScriptModules, so l2i cannot read "
                          "its hidden maps. Return the eager (Python) nn.Module instead, e.g. "
                          "build the model class and load its state_dict")
    mods = dict(model.named_modules())
    if not spec.layers:
        top = [n for n, _ in model.named_children()]
        raise ConfigError("classifier.layers is empty: name the layers whose outputs psi reads "
                          f"(named_modules() names); the top-level ones are {top}")
    for name in spec.layers:
        if name not in mods:
            close = difflib.get_close_matches(name, [n for n in mods if n], n=3, cutoff=0.4)
            raise ConfigError(f"classifier.layers: {name!r} is not a module of the model"
                              + (f"; did you mean {', '.join(close)}?" if close else
                                 f"; it has {[n for n in mods if n][:20]}"))
        if isinstance(mods[name], torch.jit.ScriptModule):
            raise ConfigError(f"classifier.layers: {name!r} is a TorchScript module: hooks are "
                              "not supported on ScriptModules; give the eager module")


def read_class_names(spec: ClassifierSpec, builder_names: list[str] | None,
                     n_classes: int) -> list[str]:
    """``class_names`` file > the builder's names > ``class_0..class_{C-1}``."""
    if spec.class_names:
        path = Path(spec.class_names)
        if not path.is_file():
            raise ConfigError(f"classifier.class_names: file {path} not found")
        names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        where = str(path)
    elif builder_names is not None:
        names, where = builder_names, f"the builder of {spec.module!r}"
    else:
        return [f"class_{i}" for i in range(n_classes)]
    if len(names) != n_classes:
        raise ConfigError(f"{where} gives {len(names)} class names but the model outputs "
                          f"{n_classes} scores")
    return names


# --------------------------------------------------------------------------- running
def _first_tensor(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next((o for o in out if isinstance(o, Tensor)), None)
    return None


def select_output(out: Any, output: int | str | None, module: str) -> Tensor:
    """The logits item of a model's output (``output``: None, a tuple index or a dict key)."""
    if output is None:
        if isinstance(out, Tensor):
            return out
        kind = f"a dict with keys {list(out)}" if isinstance(out, Mapping) else \
            f"a {type(out).__name__}"
        raise ConfigError(f"classifier {module!r}: forward returns {kind}: set classifier.output "
                          "to the index or key of the item that holds the logits")
    try:
        item = out[output]
    except (KeyError, IndexError, TypeError):
        keys = list(out) if isinstance(out, Mapping) else \
            f"indices 0..{len(out) - 1}" if isinstance(out, (tuple, list)) else "none"
        raise ConfigError(f"classifier.output {output!r}: the output of {module!r} has no such "
                          f"item (it has {keys})") from None
    if not isinstance(item, Tensor):
        raise ConfigError(f"classifier.output {output!r}: that item is a "
                          f"{type(item).__name__}, not a tensor of logits")
    return item


@contextmanager
def hooked(model: nn.Module, layers: list[str]) -> Iterator[dict[str, Tensor]]:
    """Forward hooks on ``layers`` for the duration of the block; yields ``{layer: output}``."""
    mods = dict(model.named_modules())
    seen: dict[str, Tensor] = {}
    handles = []

    def hook(name: str) -> Callable[..., None]:
        def fn(_mod: nn.Module, _inp: Any, out: Any) -> None:
            t = _first_tensor(out)
            if t is None:
                raise L2IError(f"classifier.layers: {name!r} returned {type(out).__name__}, "
                               "not a tensor: hook a layer whose output is a tensor")
            seen[name] = t.clone()  # a later in-place op (ReLU(inplace=True)) must not alter it
        return fn

    for name in layers:
        handles.append(mods[name].register_forward_hook(hook(name)))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@dataclass
class LayerInfo:
    """What probing found for one hooked layer (shapes without the batch axis)."""

    shape: list[int]  # raw output shape for the longer probe clip, without the batch
    time_axis: int  # axis of the raw output (batch = 0) that grows with the clip
    channels: int  # C of the canonical (B, C, T, F) map
    bins: int  # F of the canonical map (1 for 3-D maps)


def run_model(model: nn.Module, wav: Tensor, spec: ClassifierSpec
              ) -> tuple[Tensor, dict[str, Tensor]]:
    """``wav (B, S)`` at the model's rate -> ``(scores (B, C), raw hooked outputs)``."""
    with hooked(model, list(spec.layers)) as seen:
        out = model(wav)
    scores = select_output(out, spec.output, spec.module)
    B = wav.shape[0]
    if scores.dim() != 2 or scores.shape[0] != B:
        raise ConfigError(f"classifier {spec.module!r}: the logits must be (batch, classes) = "
                          f"({B}, C), got shape {tuple(scores.shape)}; check classifier.output")
    for name, m in seen.items():
        if m.shape[0] != B:
            raise L2IError(
                f"classifier.layers: {name!r} returns a batch of {m.shape[0]} for an input "
                f"batch of {B} (shape {tuple(m.shape)}): the model folds patches or chunks into "
                "the batch axis, so its maps are not one per clip. Hook a layer after they are "
                "put back to (batch, ...) -- or wrap the model so that layer's output is "
                "reshaped to (batch, time, ...) -- and list it in classifier.layers")
    missing = [n for n in spec.layers if n not in seen]
    if missing:
        raise L2IError(f"classifier.layers {missing}: these modules did not run in forward")
    return scores, seen


@torch.no_grad()
def probe_layers(model: nn.Module, spec: ClassifierSpec,
                 seconds: tuple[float, float] = PROBE_SECONDS
                 ) -> tuple[dict[str, LayerInfo], int]:
    """Run the model on two clip lengths (batch 2): each layer's time axis and shape.

    Returns ``({layer: LayerInfo}, n_classes)``. Raises L2IError for a layer without a time axis
    or whose batch differs from the input's (patch folding).
    """
    param = next(iter(model.parameters()), None)
    dev = param.device if param is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    shapes: list[dict[str, tuple[int, ...]]] = []
    n_classes = 0
    for sec in seconds:
        n = int(round(sec * spec.sample_rate))
        wav = (0.1 * torch.randn(2, n, generator=gen)).to(dev)  # (2, S)
        scores, seen = run_model(model, wav, spec)
        n_classes = int(scores.shape[1])
        shapes.append({k: tuple(v.shape) for k, v in seen.items()})
    info: dict[str, LayerInfo] = {}
    for name in spec.layers:
        short, long = shapes[0][name], shapes[1][name]
        axis = find_time_axis(short, long)
        if axis is None or len(long) > 4:
            why = ("no axis grows with the clip length (a pooled output?): hook a layer before "
                   "the time pooling") if axis is None else "maps may have at most 4 axes"
            raise L2IError(f"classifier.layers: {name!r} outputs {long[1:]} (without the batch) "
                           f"for {seconds[1]} s and {short[1:]} for {seconds[0]} s: {why}")
        canon = canonical_map(torch.empty(long, device="meta"), axis)
        info[name] = LayerInfo(shape=list(long[1:]), time_axis=axis, channels=int(canon.shape[1]),
                               bins=int(canon.shape[3]) if canon.dim() == 4 else 1)
    return info, n_classes


def describe_layers(info: Mapping[str, LayerInfo]) -> str:
    """One line per layer: raw shape, the time axis chosen, the (C, T, F) psi reads."""
    axes = {1: "axis 1", 2: "axis 2", 3: "axis 3"}
    return "\n".join(
        f"  {n}: output (B, {', '.join(map(str, li.shape))}), time = "
        f"{axes.get(li.time_axis, li.time_axis)}; psi reads C={li.channels}, F={li.bins}"
        for n, li in info.items())


class HookedClassifier(nn.Module):
    """The user's waveform model behind l2i's classifier interface (see the module docstring).

    Attributes: ``model`` (the user's module), ``spec``, ``features`` (l2i's STFT),
    ``class_names``, ``n_classes``, ``activation``, ``layers`` ({name: LayerInfo}),
    ``map_names``, ``map_channels``, ``map_bins``; ``needs_phase`` (re-classifying a magnitude
    needs the input's phase and length).
    """

    needs_phase = True

    def __init__(self, model: nn.Module, spec: ClassifierSpec, features: FeaturesConfig,
                 class_names: list[str], layers: Mapping[str, LayerInfo]) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.features = features
        self.class_names = list(class_names)
        self.n_classes = len(self.class_names)
        self.activation = spec.activation
        self.layers = dict(layers)
        self.map_names = tuple(spec.layers)
        self.map_channels = {n: self.layers[n].channels for n in self.map_names}
        self.map_bins = {n: self.layers[n].bins for n in self.map_names}
        self.resampler: nn.Module | None = None
        if int(features.sample_rate) != int(spec.sample_rate):
            import julius

            self.resampler = julius.ResampleFrac(int(features.sample_rate),
                                                 int(spec.sample_rate))

    def waveform(self, mag: Tensor, phase: Tensor | None, length: int | None) -> Tensor:
        """``istft(mag e^{i phase}, length)`` -> ``(B, S)`` at the model's rate."""
        from l2i.features import istft, with_phase

        if phase is None:
            raise L2IError(f"classifier {self.spec.module!r} takes waveforms: re-classifying a "
                           "magnitude needs the input's phase (call classifier(mag, phase=..., "
                           "length=...))")
        wav = istft(with_phase(mag, phase), self.features, length=length)  # (B, S)
        return self.resampler(wav) if self.resampler is not None else wav

    def forward_wave(self, wav: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``wav (B, S)`` at the model's rate -> ``(logits (B, C), canonical maps)``."""
        scores, seen = run_model(self.model, wav, self.spec)
        maps = {n: canonical_map(seen[n], self.layers[n].time_axis) for n in self.map_names}
        return to_logits(scores.float(), self.spec), maps

    def forward(self, mag: Tensor, phase: Tensor | None = None, length: int | None = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
        """``mag (B, T, F)`` + ``phase (B, T, F)`` -> ``(logits (B, C), maps)``."""
        return self.forward_wave(self.waveform(mag, phase, length))


def to_logits(scores: Tensor, spec: ClassifierSpec) -> Tensor:
    """Scores -> logits: identity for logits; ``logit(p)`` (sigmoid) / ``log p`` (softmax)."""
    if spec.scores == "logits":
        return scores
    p = scores.clamp(PROB_EPS, 1.0 - PROB_EPS)
    return torch.logit(p) if spec.activation == "sigmoid" else torch.log(p)


# --------------------------------------------------------------------------- building + records
def build_hooked(spec: ClassifierSpec, features: FeaturesConfig,
                 probe_seconds: tuple[float, float] = PROBE_SECONDS) -> HookedClassifier:
    """Import, build and probe the spec's model: a ready :class:`HookedClassifier`."""
    model, names = build_from_spec(spec)
    info, n_classes = probe_layers(model, spec, probe_seconds)
    if n_classes < 1:
        raise L2IError(f"classifier {spec.module!r} outputs no class scores")
    return HookedClassifier(model, spec, features, read_class_names(spec, names, n_classes),
                            info)


def code_record(clf: HookedClassifier) -> dict[str, Any]:
    """The checkpoint dict of a classifier given as code (no weights: hashes to check them)."""
    from l2i import __version__

    spec = asdict(clf.spec)
    path = module_file(clf.spec.module)
    if path is not None:
        spec["module"] = f"{path}:{_split_spec(clf.spec.module)[1]}"
    return {
        "format": CODE_FORMAT, "version": CODE_VERSION, "spec": spec,
        "module_sha256": sha256_file(path) if path is not None else None,
        "state_sha256": state_sha256(clf.model),
        "layers": {n: asdict(li) for n, li in clf.layers.items()},
        "n_classes": clf.n_classes, "class_names": list(clf.class_names),
        "features": asdict(clf.features), "l2i_version": __version__,
    }


def load_code_classifier(record: Mapping[str, Any], map_location: str | torch.device = "cpu",
                         module: str | None = None) -> HookedClassifier:
    """Re-import a classifier given as code from its record; refuse when a hash differs.

    ``module`` re-imports from another ``file.py:callable`` (a moved file); the hashes are
    checked all the same. The file's hash is checked *before* its code runs.
    """
    record = CK.migrate(dict(record), CODE_FORMAT, "classifier-as-code record")
    spec = from_dict(ClassifierSpec, dict(record["spec"]))
    if module:
        spec.module = module
    path = module_file(spec.module)
    want = record.get("module_sha256")
    if path is not None and want:
        if not path.is_file():
            raise L2IError(f"the classifier's code {path} is gone: put it back there, or load "
                           "with l2i.interpreter.load_interpreter(ckpt, classifier_module="
                           "'new/place.py:build'); its sha256 is checked either way")
        got = sha256_file(path)
        if got != want:
            raise L2IError(f"{path} changed since the interpreter was trained (sha256 {got[:12]} "
                           f"vs recorded {want[:12]}): restore that file or retrain with l2i "
                           "train; an interpreter explains only the model it was trained on")
    model, names = build_from_spec(spec)
    got = state_sha256(model)
    if got != record["state_sha256"]:
        raise L2IError(f"the weights built by {spec.module!r} differ from those the interpreter "
                       f"was trained on (state dict sha256 {got[:12]} vs recorded "
                       f"{str(record['state_sha256'])[:12]}): the builder must load the same "
                       "weights every time (seed or load a checkpoint); or retrain")
    layers = {n: LayerInfo(**dict(li)) for n, li in record["layers"].items()}
    features = from_dict(FeaturesConfig, dict(record["features"]))
    clf = HookedClassifier(model, spec, features, list(record["class_names"]), layers)
    return clf.to(map_location).eval()


__all__ = ["HookedClassifier", "LayerInfo", "build_hooked", "build_from_spec", "probe_layers",
           "describe_layers", "code_record", "load_code_classifier", "import_callable",
           "state_sha256", "sha256_file", "select_output", "to_logits", "CODE_FORMAT"]
